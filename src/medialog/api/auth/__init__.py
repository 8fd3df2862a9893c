"""Bearer-token authentication, by concern: ``principal`` (who is calling, the roles,
``require``), ``bearer`` (the token of a request's ``Authorization`` header), ``verifier``
(``TokenVerifier``: a JWT to a ``Principal``) and ``jwks`` (RS256 keys, the remote JWKS cache)."""
