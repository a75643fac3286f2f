import Foundation

/// What one writing stage last committed: the run, its as_of, the pipeline's
/// fingerprint and every extract's watermark. Saved in the same transaction
/// as the stage's rows, so a run that dies before committing leaves the
/// previous state and the next run redoes its work.
public struct RefreshState: Sendable, Equatable {
    public var runID: UUID
    public var asOf: CivilDate
    public var fingerprint: RefreshFingerprint
    public var watermarks: [String: Watermark]
    public var committedAt: Date

    public init(runID: UUID, asOf: CivilDate, fingerprint: RefreshFingerprint, watermarks: [String: Watermark],
                committedAt: Date = Date()) {
        self.runID = runID
        self.asOf = asOf
        self.fingerprint = fingerprint
        self.watermarks = watermarks
        self.committedAt = committedAt
    }

    /// The run id as people read it in summaries: its first 8 hex digits.
    public var shortRunID: String { String(runID.uuidString.lowercased().prefix(8)) }
}

/// The table `pipelinekit.refresh_state` in the warehouse: one row per
/// (pipeline, writing stage).
public enum RefreshStateStore {
    static let ddl = """
        CREATE SCHEMA IF NOT EXISTS pipelinekit;
        CREATE TABLE IF NOT EXISTS pipelinekit.refresh_state (
            pipeline text NOT NULL, stage_id text NOT NULL, run_id uuid NOT NULL, as_of date NOT NULL,
            fingerprint jsonb NOT NULL, watermarks jsonb NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (pipeline, stage_id));
        """

    public static func ensureSchema(_ connection: PGConnection) throws {
        try connection.schemaChange { try connection.execute(ddl) }
    }

    /// Every writing stage's last committed state, by stage id.
    public static func load(_ connection: PGConnection, pipeline: String) throws -> [String: RefreshState] {
        let result = try connection.query("""
            SELECT stage_id, run_id, as_of::text, fingerprint::text, watermarks::text,
                   extract(epoch FROM committed_at)::float8::text
            FROM pipelinekit.refresh_state WHERE pipeline = $1
            """, [pipeline])
        let decoder = JSONDecoder()
        var states: [String: RefreshState] = [:]
        for row in result.rows {
            guard let stage = row[0], let run = row[1].flatMap(UUID.init(uuidString:)),
                  let asOf = row[2].flatMap(CivilDate.init(iso:)),
                  let fingerprint = try? decoder.decode(RefreshFingerprint.self, from: Data((row[3] ?? "").utf8)),
                  let watermarks = try? decoder.decode([String: Watermark].self, from: Data((row[4] ?? "").utf8)),
                  let epoch = row[5].flatMap(Double.init) else {
                // A row this version cannot read is treated as absent: the run is then a full refresh.
                continue
            }
            states[stage] = RefreshState(runID: run, asOf: asOf, fingerprint: fingerprint, watermarks: watermarks,
                                         committedAt: Date(timeIntervalSince1970: epoch))
        }
        return states
    }

    /// Saves a stage's state; call inside the transaction that writes its rows.
    public static func save(_ connection: PGConnection, pipeline: String, stageID: String, state: RefreshState) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let fingerprint = String(decoding: try encoder.encode(state.fingerprint), as: UTF8.self)
        let watermarks = String(decoding: try encoder.encode(state.watermarks), as: UTF8.self)
        try connection.query("""
            INSERT INTO pipelinekit.refresh_state (pipeline, stage_id, run_id, as_of, fingerprint, watermarks, committed_at)
            VALUES ($1, $2, $3::uuid, $4::date, $5::jsonb, $6::jsonb, now())
            ON CONFLICT (pipeline, stage_id) DO UPDATE SET run_id = EXCLUDED.run_id, as_of = EXCLUDED.as_of,
                fingerprint = EXCLUDED.fingerprint, watermarks = EXCLUDED.watermarks, committed_at = EXCLUDED.committed_at
            """, [pipeline, stageID, state.runID.uuidString.lowercased(), state.asOf.description, fingerprint, watermarks])
    }
}
