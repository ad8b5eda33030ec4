-- Warehouse tables and the views consumers read, in schema {schema}. Applied by
-- nlp_assets.warehouse.ensure_schema (idempotent; safe to run on every load).
--
-- Tables are written by the warehouse_* assets: one transaction per (day, part) that deletes
-- the rows of that part (of the whole day for a whole-day run) and COPYs the new ones, so a
-- re-run replaces exactly what it wrote and a failed load leaves the previous rows.
-- Read the views (v_*), not the tables: the views keep their columns when load bookkeeping
-- changes. Requires PostgreSQL 12 or later.

CREATE SCHEMA IF NOT EXISTS {schema};

-- One row per cleaned document (the cleaned_text asset) of a day's part.
CREATE TABLE IF NOT EXISTS {schema}.documents (
    ingest_date   date        NOT NULL,
    part          text        NOT NULL,
    doc_id        text        NOT NULL,
    source        text        NOT NULL,
    text          text        NOT NULL,
    n_chars       bigint      NOT NULL,
    content_hash  text        NOT NULL,
    is_duplicate  boolean     NOT NULL,
    duplicate_of  text,
    lang          text        NOT NULL,
    lang_score    double precision NOT NULL,
    run_id        text        NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ingest_date, part, doc_id)
);
CREATE INDEX IF NOT EXISTS documents_doc_id ON {schema}.documents (doc_id);
CREATE INDEX IF NOT EXISTS documents_source_day ON {schema}.documents (source, ingest_date);

-- One row per document's predictions (the predictions asset) of a day's part.
CREATE TABLE IF NOT EXISTS {schema}.predictions (
    ingest_date              date        NOT NULL,
    part                     text        NOT NULL,
    doc_id                   text        NOT NULL,
    source                   text        NOT NULL,
    lang                     text        NOT NULL,
    is_duplicate             boolean     NOT NULL,
    sentiment_label          text CHECK (sentiment_label IN ('positive', 'negative')),
    sentiment_score          double precision CHECK (sentiment_score BETWEEN 0 AND 1),
    sentiment_model          text        NOT NULL,
    sentiment_model_version  text        NOT NULL,
    entities                 jsonb       NOT NULL,
    ner_model                text        NOT NULL,
    ner_model_version        text        NOT NULL,
    skipped_reason           text,
    run_id                   text        NOT NULL,
    loaded_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ingest_date, part, doc_id)
);
CREATE INDEX IF NOT EXISTS predictions_doc_id ON {schema}.predictions (doc_id);
CREATE INDEX IF NOT EXISTS predictions_day_label
    ON {schema}.predictions (ingest_date, lang, sentiment_label);

-- One row per day x language x sentiment label (the aggregates asset; always the whole day).
CREATE TABLE IF NOT EXISTS {schema}.aggregates (
    ingest_date           date        NOT NULL,
    lang                  text        NOT NULL,
    sentiment_label       text,
    n_docs                bigint      NOT NULL CHECK (n_docs >= 1),
    n_duplicates          bigint      NOT NULL CHECK (n_duplicates >= 0),
    mean_sentiment_score  double precision,
    top_entities          jsonb       NOT NULL,
    top_ngrams            jsonb       NOT NULL,
    part                  text        NOT NULL,
    run_id                text        NOT NULL,
    loaded_at             timestamptz NOT NULL DEFAULT now()
);
-- The label is null for documents the models skipped: one group per day and language too.
CREATE UNIQUE INDEX IF NOT EXISTS aggregates_key
    ON {schema}.aggregates (ingest_date, lang, COALESCE(sentiment_label, ''));

CREATE OR REPLACE VIEW {schema}.v_documents AS
    SELECT doc_id, ingest_date, source, lang, lang_score, text, n_chars, content_hash,
           is_duplicate, duplicate_of, part, loaded_at
    FROM {schema}.documents;
COMMENT ON VIEW {schema}.v_documents IS
    'Cleaned documents, one row per doc_id, ingestion day (UTC) and part (the day, or the '
    'micro-batch that brought it: a message delivered twice appears once per part, as in the '
    'lake). text is NFKC-normalised, HTML-free, with URLs/e-mails/phones masked; is_duplicate '
    'marks exact re-posts (duplicate_of = the first doc_id). Join to v_predictions on '
    '(doc_id, ingest_date, part).';

CREATE OR REPLACE VIEW {schema}.v_predictions AS
    SELECT doc_id, ingest_date, source, lang, is_duplicate, sentiment_label, sentiment_score,
           sentiment_model || '@' || sentiment_model_version AS sentiment_model,
           entities, jsonb_array_length(entities) AS n_entities,
           ner_model || '@' || ner_model_version AS ner_model,
           skipped_reason, part, loaded_at
    FROM {schema}.predictions;
COMMENT ON VIEW {schema}.v_predictions IS
    'Model predictions per document, ingestion day and part. sentiment_score is P(positive); label '
    'and score are null when the language is not served (skipped_reason says why). entities is '
    'a JSON array of {text, label, start_char, end_char} spans in the cleaned text.';

CREATE OR REPLACE VIEW {schema}.v_aggregates AS
    SELECT ingest_date, lang, sentiment_label, n_docs, n_duplicates, mean_sentiment_score,
           top_entities, top_ngrams, loaded_at
    FROM {schema}.aggregates;
COMMENT ON VIEW {schema}.v_aggregates IS
    'Per ingestion day x language x sentiment label (null label = documents the models '
    'skipped): document and duplicate counts, mean P(positive), top entities '
    '[{text, label, count}] and top n-grams [{ngram, count}].';
