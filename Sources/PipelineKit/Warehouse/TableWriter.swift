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

    public init(table: String, columns: [Field], key: [String]) {
        self.table = table
        self.columns = columns
        self.key = key
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
        // (Only settable before the session's first temporary table.)
        _ = try? connection.execute("SET temp_buffers = '256MB'")
        return try connection.transaction {
            var counts = try writeInTransaction(connection, runID: runID, deleteMissing: deleteMissing && scope == nil, batches: batches)
            if let scope, deleteMissing { counts.deleted = try deleteUnproduced(in: scope, connection) }
            try inTransaction(connection, counts)
            return counts
        }
    }

    private var quotedTable: String { SQL.qualified(table) }
    private var columnList: String { columns.map { SQL.ident($0.name) }.joined(separator: ", ") }
    private var keyList: String { key.map(SQL.ident).joined(separator: ", ") }

    private func writeInTransaction(_ connection: PGConnection, runID: UUID, deleteMissing: Bool,
                                    batches: ((Batch) throws -> Void) throws -> Void) throws -> WriteCounts {
        let staging = "pipelinekit_staging"
        try connection.execute("""
            CREATE TEMP TABLE \(staging) ON COMMIT DROP AS SELECT \(columnList) FROM \(quotedTable) WITH NO DATA
            """)
        // A table that was empty has nothing to delete: skip the anti-join.
        let hadRows = try connection.query("SELECT EXISTS (SELECT 1 FROM \(quotedTable))").string(0, 0) == "t"
        var staged = 0
        try connection.copyIn("COPY \(staging) (\(columnList)) FROM STDIN") { writer in
            try batches { batch in
                try Self.copy(batch, columns: columns.map(\.name), to: writer)
                staged += batch.count
            }
        }
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
        // Duplicate keys make the merge fail (SQLSTATE 21000, or 23505 for the
        // plain insert); only then is it worth a query to say which key, so
        // the common case pays nothing.
        try connection.execute("SAVEPOINT merge")
        var counts = WriteCounts()
        do {
            if hadRows {
                let merged = try connection.query("""
                    WITH merged AS (
                        INSERT INTO \(quotedTable) AS t (\(columnList), _run_id, _updated_at)
                        SELECT \(columnList), $1::uuid, now() FROM \(staging)
                        ON CONFLICT (\(keyList)) \(onConflict)
                        RETURNING (xmax = 0) AS inserted
                    )
                    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
                    """, [runID.uuidString.lowercased()])
                counts = WriteCounts(inserted: merged.int(0, 0) ?? 0, updated: merged.int(0, 1) ?? 0)
            } else {
                // An empty table (a first build) has nothing to merge with: a
                // plain insert costs about half of ON CONFLICT's speculative one.
                counts.inserted = try connection.query("""
                    INSERT INTO \(quotedTable) (\(columnList), _run_id, _updated_at)
                    SELECT \(columnList), $1::uuid, now() FROM \(staging)
                    """, [runID.uuidString.lowercased()]).affectedRows
            }
        } catch let error as PGError where error.sqlState == "21000" || (error.sqlState == "23505" && !hadRows) {
            try connection.execute("ROLLBACK TO SAVEPOINT merge")
            let duplicate = try connection.query("""
                SELECT \(keyList), count(*) FROM \(staging) GROUP BY \(keyList) HAVING count(*) > 1 LIMIT 1
                """)
            let values = (0..<key.count).map { "\(key[$0])=\(duplicate.string(0, $0) ?? "NULL")" }.joined(separator: ", ")
            throw StageFailure.data("\(duplicate.string(0, key.count) ?? "several") rows for the key (\(values)) of \(table); the key must be unique")
        }
        if deleteMissing && hadRows {
            let match = key.map { "s.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
            counts.deleted = try connection.query("""
                DELETE FROM \(quotedTable) AS t WHERE NOT EXISTS (SELECT 1 FROM \(staging) s WHERE \(match))
                """).affectedRows
        }
        counts.unchanged = staged - counts.inserted - counts.updated
        return counts
    }

    /// COPY text rows of `batch`'s `columns`, in that order.
    private static func copy(_ batch: Batch, columns: [String], to writer: CopyInWriter) throws {
        let batchColumns = columns.map { name in batch.columns[batch.index(of: name)!] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(1 << 16)
        for row in 0..<batch.count {
            for (index, column) in batchColumns.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: "\t")) }
                CopyTextEncoder.append(column, row: row, to: &bytes)
            }
            bytes.append(UInt8(ascii: "\n"))
            if bytes.count >= 1 << 16 {
                try writer.write(bytes: bytes)
                bytes.removeAll(keepingCapacity: true)
            }
        }
        try writer.write(bytes: bytes)
    }

    /// Deletes the rows in `scope` whose keys were not staged. The scope's
    /// values travel as COPY data, like the rows themselves.
    private func deleteUnproduced(in scope: Batch, _ connection: PGConnection) throws -> Int {
        guard scope.count > 0 else { return 0 }
        let scopeTable = "pipelinekit_scope"
        let names = scope.schema.map(\.name)
        let scopeColumns = names.map(SQL.ident).joined(separator: ", ")
        try connection.execute("CREATE TEMP TABLE \(scopeTable) ON COMMIT DROP AS SELECT \(scopeColumns) FROM \(quotedTable) WITH NO DATA")
        try connection.copyIn("COPY \(scopeTable) (\(scopeColumns)) FROM STDIN") { writer in
            try Self.copy(scope, columns: names, to: writer)
        }
        let inScope = names.map { "c.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
        let staged = key.map { "s.\(SQL.ident($0)) = t.\(SQL.ident($0))" }.joined(separator: " AND ")
        return try connection.query("""
            DELETE FROM \(quotedTable) AS t USING \(scopeTable) AS c
            WHERE \(inScope) AND NOT EXISTS (SELECT 1 FROM pipelinekit_staging s WHERE \(staged))
            """).affectedRows
    }

    /// Creates the schema and table when missing; checks an existing table's
    /// columns against the declaration so a drifted table fails clearly.
    private func ensureTable(_ connection: PGConnection) throws {
        let schema = SQL.splitQualified(table).schema
        let definitions = columns.map { "\(SQL.ident($0.name)) \($0.type.sqlName)" }
            + ["_run_id uuid NOT NULL", "_updated_at timestamptz NOT NULL", "PRIMARY KEY (\(keyList))"]
        try connection.schemaChange {
            if let schema { try connection.execute("CREATE SCHEMA IF NOT EXISTS \(SQL.ident(schema))") }
            try connection.execute("CREATE TABLE IF NOT EXISTS \(quotedTable) (\(definitions.joined(separator: ", ")))")
        }
        let existing = try connection.query("""
            SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """, [quotedTable])
        let found = Dictionary(existing.rows.map { ($0[0] ?? "", $0[1] ?? "") }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        for field in columns {
            guard let type = found[field.name] else {
                problems.append("column \(field.name) is missing")
                continue
            }
            if type != field.type.formatTypeName { problems.append("column \(field.name) is \(type), declared \(field.type.sqlName)") }
        }
        for column in Self.lineageColumns where found[column] == nil { problems.append("column \(column) is missing") }
        if !problems.isEmpty {
            throw StageFailure.config("table \(table) does not match the declared columns: \(problems.joined(separator: "; ")); migrate it or drop it so it is recreated")
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
