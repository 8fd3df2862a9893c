"""The ClickHouse projection (what analysts read): every event of the public topics as rows
(``projection``), the rows and view verdicts derived from them (``rows``, pure), and the
re-derivation of stored verdicts under a new view rule (``rederive``)."""
