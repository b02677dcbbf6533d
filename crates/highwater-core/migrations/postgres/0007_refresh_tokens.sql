-- As SQLite's migration 21: the refresh token an OAuth2 endpoint that rotates
-- them gave last, by the credential it replaces.
CREATE TABLE refresh_tokens (
    credential TEXT COLLATE "C" PRIMARY KEY,
    token      TEXT NOT NULL,
    since      BIGINT NOT NULL
);
