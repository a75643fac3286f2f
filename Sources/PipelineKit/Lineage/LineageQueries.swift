import Foundation

/// Reads the warehouse mirror for `runner lineage`.
public struct LineageQueries {
    let connection: PGConnection

    public init(warehouse: ConnInfo) throws {
        connection = try PGConnection(warehouse, applicationName: "runner/lineage")
        let exists = try connection.query("SELECT to_regclass('lineage.runs') IS NOT NULL").string(0, 0)
        guard exists == "t" else {
            throw StageFailure.config("the warehouse \(warehouse.redacted) has no lineage schema yet; run a pipeline with defaults.warehouse set first")
        }
    }

    private func table(_ sql: String, _ parameters: [String?]) throws -> TextTable {
        let result = try connection.query(sql, parameters)
        return TextTable(columns: (0..<result.columnCount).map(result.columnName),
                         rows: result.rows.map { $0.map { $0 ?? "" } })
    }

    /// The full id of the run that `id` names: a whole run id, or its first
    /// digits as summaries print them (`5f0c1e2a`), in either case.
    public func resolveRun(_ id: String) throws -> String {
        let prefix = id.lowercased()
        guard !prefix.isEmpty, prefix.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            throw LineageLookupFailed("'\(id)' is not a run id: give one as `runner lineage runs` lists it, or its first digits")
        }
        let matches = try connection.query(
            "SELECT run_id::text FROM lineage.runs WHERE run_id::text LIKE $1 || '%' ORDER BY started_at LIMIT 6", [prefix])
            .rows.compactMap { $0[0] }
        switch matches.count {
        case 0: throw LineageLookupFailed("no run \(id) in the lineage mirror; `runner lineage runs PIPELINE` lists them")
        case 1: return matches[0]
        default:
            throw LineageLookupFailed("run id \(id) is ambiguous: it begins \(matches.count > 5 ? "more than 5 runs" : "\(matches.count) runs") (\(matches.prefix(5).joined(separator: ", "))); give more digits")
        }
    }

    public func runs(pipeline: String) throws -> TextTable {
        try table("""
            SELECT run_id, status, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z' AS started,
                   round(extract(epoch FROM finished_at - started_at)::numeric, 2) AS seconds,
                   rows_written, as_of, coalesce(refresh ->> 'mode', '') AS refresh
            FROM lineage.runs WHERE pipeline = $1 ORDER BY started_at
            """, [pipeline])
    }

    public func run(_ runID: String) throws -> TextTable {
        try table("""
            SELECT run_id, pipeline, status, started_at, finished_at, as_of, pipeline_sha256, runner_version,
                   rows_written, variables, error, log_path, last_log_hash, refresh
            FROM lineage.runs WHERE run_id::text = $1
            """, [runID])
    }

    public func stages(_ runID: String) throws -> TextTable {
        try table("""
            SELECT s.stage_id AS stage, s.stage_type AS type, s.status, s.attempts, s.rows_in, s.rows_out,
                   coalesce(w.inserted::text || '/' || w.updated || '/' || w.deleted || '/' || w.unchanged, '') AS "ins/upd/del/same",
                   s.excluded AS excluded, coalesce(s.sql_state, '') AS sqlstate, coalesce(s.error, '') AS error
            FROM lineage.stage_runs s
            LEFT JOIN lineage.dataset_writes w ON w.run_id = s.run_id AND w.stage_id = s.stage_id
            WHERE s.run_id::text = $1 ORDER BY s.seconds IS NULL, s.stage_id
            """, [runID])
    }

    public func tableHistory(_ dataset: String) throws -> TextTable {
        try table("""
            SELECT w.run_id, r.status AS run_status, w.written_at, w.stage_id AS stage, w.inserted, w.updated,
                   w.deleted, w.unchanged, r.stage_configs ->> w.stage_id AS config_sha256, r.pipeline_sha256
            FROM lineage.dataset_writes w JOIN lineage.runs r USING (run_id)
            WHERE w.dataset = $1 ORDER BY w.written_at
            """, [dataset])
    }

    /// What differs between two runs: file hash, stage configs, variables, row counts.
    public func diff(_ a: String, _ b: String) throws -> TextTable {
        try table("""
            WITH x AS (SELECT * FROM lineage.runs WHERE run_id::text = $1),
                 y AS (SELECT * FROM lineage.runs WHERE run_id::text = $2),
                 facts AS (
                   SELECT 'pipeline file sha256' AS what, x.pipeline_sha256 AS a, y.pipeline_sha256 AS b FROM x, y
                   UNION ALL SELECT 'as_of', x.as_of::text, y.as_of::text FROM x, y
                   UNION ALL SELECT 'variable ' || k, x.variables ->> k, y.variables ->> k
                     FROM x, y, (SELECT jsonb_object_keys(x.variables) k FROM x UNION SELECT jsonb_object_keys(y.variables) FROM y) keys
                   UNION ALL SELECT 'config ' || k, x.stage_configs ->> k, y.stage_configs ->> k
                     FROM x, y, (SELECT jsonb_object_keys(x.stage_configs) k FROM x UNION SELECT jsonb_object_keys(y.stage_configs) FROM y) keys
                   UNION ALL SELECT 'rows written ' || coalesce(wa.dataset, wb.dataset),
                     wa.inserted || '/' || wa.updated || '/' || wa.deleted || '/' || wa.unchanged,
                     wb.inserted || '/' || wb.updated || '/' || wb.deleted || '/' || wb.unchanged
                     FROM (SELECT * FROM lineage.dataset_writes WHERE run_id::text = $1) wa
                     FULL JOIN (SELECT * FROM lineage.dataset_writes WHERE run_id::text = $2) wb USING (stage_id, dataset)
                   UNION ALL SELECT 'stage ' || coalesce(sa.stage_id, sb.stage_id) || ' rows in/out',
                     sa.rows_in || '/' || sa.rows_out, sb.rows_in || '/' || sb.rows_out
                     FROM (SELECT * FROM lineage.stage_runs WHERE run_id::text = $1) sa
                     FULL JOIN (SELECT * FROM lineage.stage_runs WHERE run_id::text = $2) sb USING (stage_id))
            SELECT what, coalesce(a, '') AS run_a, coalesce(b, '') AS run_b,
                   CASE WHEN a IS DISTINCT FROM b THEN 'changed' ELSE '' END AS change
            FROM facts ORDER BY change DESC, what
            """, [a, b])
    }

    /// Each run's last log hash, for `verify --against`.
    public func lastHashes(logPath: String) throws -> [(run: String, hash: String)] {
        try connection.query("""
            SELECT run_id::text, last_log_hash FROM lineage.runs
            WHERE log_path = $1 AND last_log_hash IS NOT NULL AND last_log_hash <> ''
            """, [logPath]).rows.map { ($0[0] ?? "", $0[1] ?? "") }
    }
}

/// A `runner lineage` question about something the mirror does not hold.
public struct LineageLookupFailed: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
