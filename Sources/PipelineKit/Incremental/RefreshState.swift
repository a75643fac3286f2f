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
    /// Each tracked extract's key gaps below its watermark (see `KeyGaps`);
    /// an extract without them has its whole look-back re-checked.
    public var gaps: [String: KeyGaps]
    public var committedAt: Date
    /// The tables the stage wrote, by name, each as "oid:file node" when its
    /// rows committed; nil in a state saved before tables were recorded.
    public var tables: [String: String]?
    /// The same tables as the warehouse has them now (a dropped one is
    /// absent); filled when the state is loaded, never saved.
    public var tablesNow: [String: String]

    public init(runID: UUID, asOf: CivilDate, fingerprint: RefreshFingerprint, watermarks: [String: Watermark],
                gaps: [String: KeyGaps] = [:], committedAt: Date = Date(), tables: [String: String]? = [:],
                tablesNow: [String: String] = [:]) {
        self.runID = runID
        self.asOf = asOf
        self.fingerprint = fingerprint
        self.watermarks = watermarks
        self.gaps = gaps
        self.committedAt = committedAt
        self.tables = tables
        self.tablesNow = tablesNow
    }

    /// Why the tables no longer hold what this state describes, if they do not:
    /// one was dropped, or its file was replaced, which TRUNCATE, VACUUM FULL,
    /// CLUSTER and a table dropped and created again all do. (Rows deleted
    /// one by one leave the file; the README says to run --full-refresh then.)
    public var tablesChanged: String? {
        guard let tables else { return "its state was saved by an earlier version, which did not record the tables it wrote" }
        for (table, identity) in tables.sorted(by: { $0.key < $1.key }) {
            guard let now = tablesNow[table] else { return "table \(table) no longer exists" }
            if now != identity {
                return "table \(table) was emptied or rewritten since (TRUNCATE, VACUUM FULL, CLUSTER, or dropped and created again)"
            }
        }
        return nil
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
        -- The tables each stage wrote, by oid and file node (added after the first release).
        ALTER TABLE pipelinekit.refresh_state ADD COLUMN IF NOT EXISTS tables jsonb;
        -- The tracked extracts' key gaps (added later; NULL in older states).
        ALTER TABLE pipelinekit.refresh_state ADD COLUMN IF NOT EXISTS key_gaps jsonb;
        """

    public static func ensureSchema(_ connection: PGConnection) throws {
        try connection.schemaChange { try connection.execute(ddl) }
    }

    /// A table's identity: its oid and the file holding its rows, which a
    /// TRUNCATE or a rewrite replaces while the oid stays. A partitioned
    /// table has no file of its own: only its oid counts.
    static let identity = "c.oid::text || ':' || coalesce(pg_relation_filenode(c.oid)::text, 'partitioned')"

    /// Every writing stage's last committed state, by stage id, with its tables as they are now.
    public static func load(_ connection: PGConnection, pipeline: String) throws -> [String: RefreshState] {
        let result = try connection.query("""
            SELECT stage_id, run_id, as_of::text, fingerprint::text, watermarks::text,
                   extract(epoch FROM committed_at)::float8::text, tables::text,
                   (SELECT jsonb_object_agg(t.key, \(identity)) FROM jsonb_each(tables) t
                    JOIN pg_class c ON c.oid = to_regclass(t.key))::text,
                   key_gaps::text
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
            let tables = row[6].flatMap { try? decoder.decode([String: String].self, from: Data($0.utf8)) }
            let tablesNow = row[7].flatMap { try? decoder.decode([String: String].self, from: Data($0.utf8)) } ?? [:]
            // Gaps that cannot be read, or that another run's state left
            // (a version that did not know them updates the row without
            // them), only cost the next run a slower look-back.
            let gaps = row[8].flatMap { try? decoder.decode(StoredKeyGaps.self, from: Data($0.utf8)) }
                .flatMap { $0.run == run ? $0.extracts : nil } ?? [:]
            states[stage] = RefreshState(runID: run, asOf: asOf, fingerprint: fingerprint, watermarks: watermarks, gaps: gaps,
                                         committedAt: Date(timeIntervalSince1970: epoch), tables: tables, tablesNow: tablesNow)
        }
        return states
    }

    /// Saves a stage's state and the identity of `table`, just written; call
    /// inside the transaction that writes its rows. A stage writing several
    /// tables adds each to the same run's state.
    public static func save(_ connection: PGConnection, pipeline: String, stageID: String, state: RefreshState,
                            table: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let fingerprint = String(decoding: try encoder.encode(state.fingerprint), as: UTF8.self)
        let watermarks = String(decoding: try encoder.encode(state.watermarks), as: UTF8.self)
        let gaps = String(decoding: try encoder.encode(StoredKeyGaps(run: state.runID, extracts: state.gaps)), as: UTF8.self)
        try connection.query("""
            INSERT INTO pipelinekit.refresh_state AS s (pipeline, stage_id, run_id, as_of, fingerprint, watermarks, committed_at, tables,
                                                        key_gaps)
            VALUES ($1, $2, $3::uuid, $4::date, $5::jsonb, $6::jsonb, now(),
                    (SELECT jsonb_build_object(format('%I.%I', n.nspname, c.relname), \(identity))
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($7)),
                    $8::jsonb)
            ON CONFLICT (pipeline, stage_id) DO UPDATE SET run_id = EXCLUDED.run_id, as_of = EXCLUDED.as_of,
                fingerprint = EXCLUDED.fingerprint, watermarks = EXCLUDED.watermarks, committed_at = EXCLUDED.committed_at,
                key_gaps = EXCLUDED.key_gaps,
                tables = CASE WHEN s.run_id = EXCLUDED.run_id THEN coalesce(s.tables, '{}') || EXCLUDED.tables ELSE EXCLUDED.tables END
            """, [pipeline, stageID, state.runID.uuidString.lowercased(), state.asOf.description, fingerprint, watermarks,
                  SQL.qualified(table), gaps])
    }
}

/// The key gaps as `refresh_state.key_gaps` holds them: with the run whose
/// watermarks they belong to.
private struct StoredKeyGaps: Codable {
    var run: UUID
    var extracts: [String: KeyGaps]
}
