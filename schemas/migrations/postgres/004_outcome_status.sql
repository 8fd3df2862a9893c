-- A rejected command keeps the domain error's class and details, not only its code, so the api
-- answers a waited-for rejection exactly as it would answer the error itself (same status, same
-- JSON shape). The class name (Conflict, Forbidden, …) is domain vocabulary; the api maps it
-- to an HTTP status at the edge (medialog.api.errors). Rows written before this have NULLs.
ALTER TABLE command_outcomes
    ADD COLUMN error_class   text,
    ADD COLUMN error_details jsonb;
