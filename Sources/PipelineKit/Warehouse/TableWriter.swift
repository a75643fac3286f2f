import Crypto
import Foundation

/// Writes rows into a keyed warehouse table idempotently and atomically:
/// COPY into a temporary table, then one set-based merge that touches only
/// rows whose values changed, and (on a full refresh) deletes keys that are
/// no longer produced; all in one transaction.
///
/// Every row carries `_run_id` (the run that last inserted or changed it) and
/// `_updated_at`; an unchanged row keeps both.
public struct TableWriter: Sendable {
    public let table: String
    public let columns: [Field]
    public let key: [String]
    /// Columns a table created by an earlier version may lack: they are
    /// added (NULL in its rows) instead of failing the write, e.g. a stage's
    /// bookkeeping columns.
    public let addable: Set<String>
    /// Secondary indexes (lists of columns), created when missing.
    public let indexes: [[String]]

    public init(table: String, columns: [Field], key: [String], addable: Set<String> = [], indexes: [[String]] = []) {
        self.table = table
        self.columns = columns
        self.key = key
        self.addable = addable
        self.indexes = indexes
    }

    public static let lineageColumns = ["_run_id", "_updated_at"]

    /// Writes `batches` and returns what changed. `inTransaction` runs inside
    /// the same transaction before COMMIT (e.g. to record lineage).
    ///
    /// With a `scope` (an incremental result), only the part of the table
    /// whose `scope` columns match one of its rows is replaced: rows there
    /// that `batches` no longer produce are deleted, rows elsewhere are left
    /// alone. Scope values are compared with `=`, so a NULL matches nothing.
    public func write(_ connection: PGConnection, runID: UUID, deleteMissing: Bool, scope: Batch? = nil,
                      batches: ((Batch) throws -> Void) throws -> Void,
                      inTransaction: (PGConnection, WriteCounts) throws -> Void = { _, _ in }) throws -> WriteCounts {
        if let scope, let stray = scope.schema.first(where: { field in !columns.contains { $0.name == field.name } }) {
            throw StageFailure.config("the changed part is keyed by '\(stray.name)', which \(table) does not have; write the columns (\(scope.schema.map(\.name).joined(separator: ", "))) to the table")
        }
        try ensureTable(connection)
        // The staging table is temporary, so it lives in the session's local
        // buffers: 8 MB by default, which a large write would spill to disk.
        // (Only settable before the session's first temporary table: a
        // session reused from an earlier write has it already.)
        _ = try? connection.query("""
            SELECT set_config('temp_buffers', '256MB', false) WHERE current_setting('temp_buffers') <> '256MB'
            """)
        // A table with rows gets a missing index in a transaction of its own,
        // so its SHARE lock lasts the build only; an empty one after its rows.
        if !indexes.isEmpty, try !missingIndexes(connection).isEmpty {
            try connection.transaction { try createMissingIndexes(connection, unlessEmpty: true) }
        }
        return try connection.transaction {
            // Taken before the table is, as the transaction above takes it.
            if !indexes.isEmpty { try lockIndexCreation(connection) }
            var counts: WriteCounts
            if try connection.query("SELECT EXISTS (SELECT 1 FROM \(quotedTable))").string(0, 0) == "t" {
                counts = try merge(connection, runID: runID, deleteMissing: deleteMissing && scope == nil, batches: batches)
                if let scope, deleteMissing { counts.deleted = try deleteUnproduced(in: scope, connection) }
            } else {
                counts = try load(connection, runID: runID, batches: batches)
                // After the rows: one sort per index, instead of an insertion
                // per row and index while they are copied (a third of the load).
                if !indexes.isEmpty { try createMissingIndexes(connection, unlessEmpty: false) }
            }
            try inTransaction(connection, counts)
            return counts
        }
    }

    private var quotedTable: String { SQL.qualified(table) }
    private var columnList: String { columns.map { SQL.ident($0.name) }.joined(separator: ", ") }
    private var keyList: String { key.map(SQL.ident).joined(separator: ", ") }

    /// An empty table (a first build) has nothing to merge with or delete:
    /// the rows are copied straight into it, stamped like merged rows with
    /// the run and the transaction's start time.
    private func load(_ connection: PGConnection, runID: UUID, batches: ((Batch) throws -> Void) throws -> Void) throws -> WriteCounts {
        guard let now = try connection.query("SELECT (extract(epoch FROM now() - '2000-01-01 00:00:00+00') * 1000000)::bigint")
            .int(0, 0) else { throw PGError(kind: .protocolViolation, message: "no transaction time from the warehouse") }
        let stamps = [CopyBinaryEncoder.uuid(runID), CopyBinaryEncoder.timestamptz(Int64(now))]
        do {
            return WriteCounts(inserted: try Self.copyIn(quotedTable, columns: columns, constants: (Self.lineageColumns, stamps),
                                                         connection, batches: batches))
        } catch let error as PGError where error.sqlState == "23505" {
            // The server names the first repeated key: "Key (id)=(5) already exists."
            var repeated = "(\(key.joined(separator: ", ")))"
            if let detail = error.detail, let start = detail.range(of: "Key ") {
                repeated = detail[start.upperBound...].replacingOccurrences(of: " already exists.", with: "")
            }
            throw StageFailure.data("several rows for the key \(repeated) of \(table); the key must be unique")
        }
    }

    /// COPY into a temporary table, then one merge that touches only rows
    /// whose values changed; with `deleteMissing`, keys not staged are deleted.
    private func merge(_ connection: PGConnection, runID: UUID, deleteMissing: Bool,
                       batches: ((Batch) throws -> Void) throws -> Void) throws -> WriteCounts {
        let staging = "pipelinekit_staging"
        try connection.execute("""
            CREATE TEMP TABLE \(staging) ON COMMIT DROP AS SELECT \(columnList) FROM \(quotedTable) WITH NO DATA
            """)
        let staged = try Self.copyIn(staging, columns: columns, connection, batches: batches)
        let valueColumns = columns.map(\.name).filter { !key.contains($0) }
        let onConflict: String
        if valueColumns.isEmpty {
            onConflict = "DO NOTHING"
        } else {
            let assignments = (valueColumns.map { "\(SQL.ident($0)) = EXCLUDED.\(SQL.ident($0))" }
                + ["_run_id = EXCLUDED._run_id", "_updated_at = EXCLUDED._updated_at"]).joined(separator: ", ")
            let current = valueColumns.map { "t.\(SQL.ident($0))" }.joined(separator: ", ")
            let incoming = valueColumns.map { "EXCLUDED.\(SQL.ident($0))" }.joined(separator: ", ")
            onConflict = "DO UPDATE SET \(assignments) WHERE (\(current)) IS DISTINCT FROM (\(incoming))"
        }
        // A key staged twice must fail the write. The merge alone does not
        // always notice: when the first copy equals the table's row, ON
        // CONFLICT only locks that row, and the second copy goes through.
        let duplicate = try connection.query("""
            SELECT \(keyList), count(*) FROM \(staging) GROUP BY \(keyList) HAVING count(*) > 1 LIMIT 1
            """)
        if duplicate.rowCount > 0 {
            let values = (0..<key.count).map { duplicate.string(0, $0) ?? "NULL" }.joined(separator: ", ")
            throw StageFailure.data("\(duplicate.string(0, key.count) ?? "several") rows for the key (\(key.joined(separator: ", ")))=(\(values)) of \(table); the key must be unique")
        }
        let merged = try connection.query("""
            WITH merged AS (
                INSERT INTO \(quotedTable) AS t (\(columnList), _run_id, _updated_at)
                SELECT \(columnList), $1::uuid, now() FROM \(staging)
                ON CONFLICT (\(keyList)) \(onConflict)
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
            """, [runID.uuidString.lowercased()])
        var counts = WriteCounts(inserted: merged.int(0, 0) ?? 0, updated: merged.int(0, 1) ?? 0)
        if deleteMissing {
            let match = key.map { "s.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
            counts.deleted = try connection.query("""
                DELETE FROM \(quotedTable) AS t WHERE NOT EXISTS (SELECT 1 FROM \(staging) s WHERE \(match))
                """).affectedRows
        }
        counts.unchanged = staged - counts.inserted - counts.updated
        return counts
    }

    /// Streams `batches` into `table` with one binary COPY; returns the rows sent.
    /// `constants` are further columns with one value for every row, in COPY binary form.
    @discardableResult
    private static func copyIn(_ table: String, columns: [Field], constants: (names: [String], values: [[UInt8]]) = ([], []),
                               _ connection: PGConnection, batches: ((Batch) throws -> Void) throws -> Void) throws -> Int {
        var rows = 0
        let columnList = (columns.map(\.name) + constants.names).map(SQL.ident).joined(separator: ", ")
        try connection.copyIn("COPY \(table) (\(columnList)) FROM STDIN (FORMAT binary)") { writer in
            try writer.write(bytes: CopyBinaryEncoder.header)
            try batches { batch in
                var encoder = try CopyBinaryEncoder(columns: columns.map { batch.columns[batch.index(of: $0.name)!] },
                                                    types: columns.map(\.type), constants: constants.values)
                for row in 0..<batch.count {
                    try encoder.append(row: row)
                    if encoder.bytes.count >= 1 << 16 { try writer.write(bytes: encoder.takeBytes()) }
                }
                try writer.write(bytes: encoder.takeBytes())
                rows += batch.count
            }
            try writer.write(bytes: CopyBinaryEncoder.trailer)
        }
        return rows
    }

    /// Deletes the rows in `scope` whose keys were not staged. The scope's
    /// values travel as COPY data, like the rows themselves.
    private func deleteUnproduced(in scope: Batch, _ connection: PGConnection) throws -> Int {
        guard scope.count > 0 else { return 0 }
        let scopeTable = "pipelinekit_scope"
        let names = scope.schema.map(\.name)
        let scopeColumns = names.map(SQL.ident).joined(separator: ", ")
        try connection.execute("CREATE TEMP TABLE \(scopeTable) ON COMMIT DROP AS SELECT \(scopeColumns) FROM \(quotedTable) WITH NO DATA")
        // The scope table has the table's types, which binary COPY must match.
        let scopeFields = names.map { name in columns.first { $0.name == name }! }
        try Self.copyIn(scopeTable, columns: scopeFields, connection) { try $0(scope) }
        // Without statistics the planner takes a temporary table for ~2000
        // rows and hashes the whole warehouse table. Only the staged rows' key
        // is compared below: its statistics are a fifth of the work of all columns'.
        try connection.execute("ANALYZE \(scopeTable), pipelinekit_staging (\(keyList))")
        if Set(names) == Set(key) {
            // One row per scope value: the values with no staged row are the
            // rows to delete, found among the few changed ones and then by key.
            let unstaged = key.map { "s.\(SQL.ident($0)) = c.\(SQL.ident($0))" }.joined(separator: " AND ")
            return try connection.query("""
                DELETE FROM \(quotedTable) AS t WHERE (\(keyList)) IN (
                    SELECT \(keyList) FROM \(scopeTable) AS c
                    WHERE NOT EXISTS (SELECT 1 FROM pipelinekit_staging s WHERE \(unstaged)))
                """).affectedRows
        }
        let inScope = names.map { "c.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
        let staged = key.map { "s.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
        return try connection.query("""
            DELETE FROM \(quotedTable) AS t USING \(scopeTable) AS c
            WHERE \(inScope) AND NOT EXISTS (SELECT 1 FROM pipelinekit_staging s WHERE \(staged))
            """).affectedRows
    }

    /// The name of the index on `columns`, as PostgreSQL would choose it
    /// (`table_col_idx`); one longer than an identifier may be (63 bytes) is
    /// cut and told apart by a hash of the whole.
    static func indexName(table: String, columns: [String]) -> String {
        let name = ([SQL.splitQualified(table).table] + columns + ["idx"]).joined(separator: "_")
        guard name.utf8.count > 63 else { return name }
        let digest = Hex.string(SHA256.hash(data: Data(name.utf8)).prefix(4))
        var cut = ""
        for character in name {
            guard cut.utf8.count + character.utf8.count <= 54 else { break }
            cut.append(character)
        }
        return cut + "_" + digest
    }

    /// Creates the schema and table when missing; checks an existing table's
    /// columns against the declaration so a drifted table fails clearly.
    private func ensureTable(_ connection: PGConnection) throws {
        let schema = SQL.splitQualified(table).schema
        let definitions = columns.map { "\(SQL.ident($0.name)) \($0.type.sqlName)" }
            + ["_run_id uuid NOT NULL", "_updated_at timestamptz NOT NULL", "PRIMARY KEY (\(keyList))"]
        // The DDL comes first, under its lock: a catalog lookup of a missing
        // schema or table before it would leave this session a cached "does
        // not exist" that CREATE ... IF NOT EXISTS trusts even after another
        // writer created it while this one waited for the lock.
        try connection.schemaChange {
            if let schema { try connection.execute("CREATE SCHEMA IF NOT EXISTS \(SQL.ident(schema))") }
            try connection.execute("CREATE TABLE IF NOT EXISTS \(quotedTable) (\(definitions.joined(separator: ", ")))")
        }
        var existing = try existingColumns(connection)
        let present = Set(existing.rows.compactMap { $0[0] })
        let missing = columns.filter { addable.contains($0.name) && !present.contains($0.name) }
        if !missing.isEmpty {
            try connection.schemaChange {
                for field in missing {
                    try connection.execute("ALTER TABLE \(quotedTable) ADD COLUMN IF NOT EXISTS \(SQL.ident(field.name)) \(field.type.sqlName)")
                }
            }
            existing = try existingColumns(connection)
        }
        try check(existing)
    }

    /// Creates the declared indexes the table lacks, in the caller's
    /// transaction; with `unlessEmpty`, only when the table has rows (an empty
    /// one gets them after its first load). Any valid btree index on the same
    /// columns counts, whatever its name (one built by hand with CREATE INDEX
    /// CONCURRENTLY, say), so a write that finds them all takes no table lock
    /// for them: creating one takes a SHARE lock, which waits for the table's
    /// writers and blocks them until the transaction commits. Creations are
    /// serialised per table (the names are the table's), not warehouse-wide:
    /// the warehouse's DDL lock is not taken while a table is locked.
    private func createMissingIndexes(_ connection: PGConnection, unlessEmpty: Bool) throws {
        // Looked up under the lock: another writer may have just created them.
        try lockIndexCreation(connection)
        let lacking = try missingIndexes(connection)
        guard !lacking.isEmpty else { return }
        if unlessEmpty, try connection.query("SELECT EXISTS (SELECT 1 FROM \(quotedTable))").string(0, 0) != "t" { return }
        for index in lacking {
            try connection.execute("""
                CREATE INDEX IF NOT EXISTS \(SQL.ident(Self.indexName(table: table, columns: index))) \
                ON \(quotedTable) (\(index.map(SQL.ident).joined(separator: ", ")))
                """)
        }
        if let index = try missingIndexes(connection).first {
            throw StageFailure.config("""
                the index on \(table) (\(index.joined(separator: ", "))) could not be created: another index or table is \
                named \(Self.indexName(table: table, columns: index)); rename or drop that one
                """)
        }
    }

    private func lockIndexCreation(_ connection: PGConnection) throws {
        try connection.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ["pipelinekit:index:" + quotedTable])
    }

    /// The declared indexes that no valid btree index on exactly their
    /// columns, in order, serves (one of another kind may not serve a range).
    private func missingIndexes(_ connection: PGConnection) throws -> [[String]] {
        let present = Set(try connection.query("""
            SELECT json_agg(a.attname ORDER BY k.n)::text FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = to_regclass($1) AND k.n <= i.indnkeyatts AND i.indisvalid
              AND i.indpred IS NULL AND i.indexprs IS NULL
            GROUP BY i.indexrelid
            """, [quotedTable]).rows.map { SQL.names(fromJSON: $0[0]) })
        return indexes.filter { !present.contains($0) }
    }

    /// Each column's name, type, whether it must be given a value, and whether
    /// the key has a unique index; no rows when the table does not exist.
    private func existingColumns(_ connection: PGConnection) throws -> PGResult {
        // The merge's ON CONFLICT, and the duplicate check of a first load, need
        // a unique index on exactly the key; asked in the same round trip.
        let keyNames = "ARRAY[\(key.map(SQL.literal).joined(separator: ", "))]::text[]"
        return try connection.query("""
            SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',
                   EXISTS (SELECT 1 FROM pg_index i
                           CROSS JOIN LATERAL (SELECT array_agg(k.attname::text) AS names FROM pg_attribute k
                                               WHERE k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey)) keyed
                           WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                             AND keyed.names @> \(keyNames) AND keyed.names <@ \(keyNames))
            FROM pg_attribute a
            WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """, [quotedTable])
    }

    private func check(_ existing: PGResult) throws {
        let found = Dictionary(existing.rows.map { ($0[0] ?? "", $0[1] ?? "") }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        if existing.rows.first?[3] != "t" {
            problems.append("no primary key or unique index on exactly (\(key.joined(separator: ", ")))")
        }
        // Writes name only the declared columns: another one that needs a value fails every insert.
        let declared = Set(columns.map(\.name) + Self.lineageColumns)
        for row in existing.rows where row[2] == "t" && !declared.contains(row[0] ?? "") {
            problems.append("column \(row[0] ?? "") is NOT NULL without a default but not declared")
        }
        for field in columns {
            guard let type = found[field.name] else {
                problems.append("column \(field.name) is missing")
                continue
            }
            if type != field.type.formatTypeName { problems.append("column \(field.name) is \(type), declared \(field.type.sqlName)") }
        }
        for column in Self.lineageColumns where found[column] == nil { problems.append("column \(column) is missing") }
        if !problems.isEmpty {
            throw StageFailure.config("table \(table) does not match the declaration: \(problems.joined(separator: "; ")); migrate it or drop it so it is recreated")
        }
    }
}

extension DataType {
    /// The type as written in CREATE TABLE.
    var sqlName: String {
        switch self {
        case .double: "double precision"
        default: description
        }
    }

    /// The type as `format_type` prints it.
    var formatTypeName: String {
        switch self {
        case .smallint: "smallint"
        case .int: "integer"
        case .bigint: "bigint"
        case .double: "double precision"
        case .bool: "boolean"
        case .text: "text"
        case .date: "date"
        case .timestamptz: "timestamp with time zone"
        case let .numeric(precision, scale): "numeric(\(precision),\(scale))"
        }
    }
}
