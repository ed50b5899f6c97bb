-- Search: one row a workflow or run, its text by field and a weighted
-- document (A: id and name, B: tags and description, C: errors and
-- prompts, D: inputs and outputs) that PostgreSQL's full-text search reads.
CREATE TABLE cairn_search (
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    name        TEXT NOT NULL,
    tags        TEXT NOT NULL,
    description TEXT NOT NULL,
    prompts     TEXT NOT NULL,
    errors      TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    doc         TSVECTOR NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX cairn_search_doc ON cairn_search USING GIN (doc);
