-- The refresh token an OAuth2 endpoint that rotates them gave last, by the
-- credential it replaces (a hash of the token endpoint, the client id and the
-- configured refresh token, which the endpoint may have spent): the next
-- process starts from it, and a newly configured token from itself.
CREATE TABLE refresh_tokens (
    credential TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    since      INTEGER NOT NULL
) WITHOUT ROWID;
