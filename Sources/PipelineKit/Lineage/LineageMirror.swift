import Foundation

/// The lineage tables in the warehouse (schema `lineage`): runs, stage runs
/// and dataset writes. Dataset writes are inserted in the same transaction as
/// the data they describe, so a rolled-back write leaves no claim behind.
public enum LineageMirror {
    static let ddl = """
        CREATE SCHEMA IF NOT EXISTS lineage;
        CREATE TABLE IF NOT EXISTS lineage.runs (
            run_id uuid PRIMARY KEY, pipeline text NOT NULL, status text NOT NULL,
            started_at timestamptz NOT NULL, finished_at timestamptz, as_of date NOT NULL,
            pipeline_sha256 text NOT NULL, variables jsonb NOT NULL, stage_configs jsonb NOT NULL,
            runner_version text NOT NULL, rows_written bigint, error text, log_path text, last_log_hash text);
        -- Full or incremental, why, and the watermarks before and after (added after the first release).
        ALTER TABLE lineage.runs ADD COLUMN IF NOT EXISTS refresh jsonb;
        CREATE TABLE IF NOT EXISTS lineage.stage_runs (
            run_id uuid NOT NULL REFERENCES lineage.runs, stage_id text NOT NULL, stage_type text NOT NULL,
            status text NOT NULL, attempts int NOT NULL, rows_in bigint NOT NULL, rows_out bigint NOT NULL,
            excluded jsonb NOT NULL, config_sha256 text NOT NULL, seconds double precision NOT NULL,
            error text, sql_state text, PRIMARY KEY (run_id, stage_id));
        CREATE TABLE IF NOT EXISTS lineage.dataset_writes (
            run_id uuid NOT NULL REFERENCES lineage.runs, stage_id text NOT NULL, dataset text NOT NULL,
            inserted bigint NOT NULL, updated bigint NOT NULL, deleted bigint NOT NULL, unchanged bigint NOT NULL,
            written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, stage_id, dataset));
        """

    static func ensureSchema(_ connection: PGConnection) throws {
        try connection.schemaChange { try connection.execute(ddl) }
    }

    /// Records a table write; call inside the transaction that writes the data.
    /// The first committed record of a (run, stage, table) stands: a retry
    /// after a COMMIT whose acknowledgement was lost finds every row already
    /// written, and its all-unchanged counts must not replace the real ones.
    public static func recordWrite(_ connection: PGConnection, runID: UUID, stageID: String, table: String,
                                   counts: WriteCounts) throws {
        try connection.query("""
            INSERT INTO lineage.dataset_writes (run_id, stage_id, dataset, inserted, updated, deleted, unchanged)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (run_id, stage_id, dataset) DO NOTHING
            """, [runID.uuidString.lowercased(), stageID, table, String(counts.inserted), String(counts.updated),
                  String(counts.deleted), String(counts.unchanged)])
    }
}
