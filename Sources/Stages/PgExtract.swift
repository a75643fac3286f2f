import Crypto
import Foundation
import PipelineKit

/// Streams a table or query from a PostgreSQL connection with COPY (binary)
/// into typed columnar batches.
///
/// The stage itself only checks the declared columns against the source; the
/// rows flow when a downstream stage scans the output, while the COPY is
/// still running, so a large table is never held in memory whole.
public struct PgExtract: Stage {
    public static let type = "pgExtract"
    public static let summary = "Streams a table (chosen columns, optional predicate) or a query with COPY binary into typed batches; the source session is read-only."
    public static let produces = OutputKind.relation
    public static let configKeys: [ConfigKey] = [
        .required("connection", .identifier, "the connection to read from"),
        .optional("table", .identifier, "table to read, as table or schema.table (give table or query)"),
        .optional("query", .string, "a SELECT to read instead of a table"),
        .required("columns", .dictionary(.string), "the columns to read, name: type (\(DataType.declarableNames)); checked against the source"),
        .optional("where", .string, "SQL predicate applied to the table"),
        .optional("batch_rows", .integer(min: 1), "rows per batch handed downstream (default 16384)"),
    ]

    let connection: String
    let table: String?
    let query: String?
    let predicate: String?
    let fields: [Field]
    let batchRows: Int

    public init(config: ConfigNode, build: StageBuild) throws {
        connection = try build.connection(config["connection"])
        table = config["table"]?.string
        query = config["query"]?.string
        predicate = config["where"]?.string
        batchRows = config["batch_rows"]?.int ?? 16_384
        if (table == nil) == (query == nil) {
            build.error(at: config, "give exactly one of 'table' or 'query'")
            throw StageBuild.Invalid()
        }
        if query != nil, let node = config["where"] {
            build.error(at: node, "'where' applies to 'table'; put the predicate inside the query")
            throw StageBuild.Invalid()
        }
        fields = try build.fields(config["columns"])
    }

    /// The SELECT whose result is copied: only the declared columns, quoted.
    var selectSQL: String {
        let columns = fields.map { SQL.ident($0.name) }.joined(separator: ", ")
        if let table {
            return "SELECT \(columns) FROM \(SQL.qualified(table))" + (predicate.map { " WHERE \($0)" } ?? "")
        }
        return "SELECT \(columns) FROM (\(query!)) AS extract_query"
    }

    public func run(_ context: StageContext) throws -> StageOutput {
        let dataset = try context.connections.with(connection) { connection -> DatasetUse in
            // Even the type check runs read-only: a query with a data-modifying CTE must not write.
            try connection.execute("BEGIN READ ONLY")
            defer { _ = try? connection.execute("ROLLBACK") }
            let result = try connection.query(selectSQL + " LIMIT 0")
            var problems: [String] = []
            for (index, field) in fields.enumerated() {
                let oid = result.columnType(index)
                if !field.type.acceptedOIDs.contains(oid) {
                    problems.append("column '\(field.name)' is \(DataType.name(ofOID: oid)) in the source but declared \(field.type); declare it as the source type or cast it in a query")
                }
            }
            if !problems.isEmpty { throw StageFailure.config(problems.joined(separator: "; ")) }
            return DatasetUse(
                direction: .input,
                namespace: "postgres://\(connection.resolvedHost):\(connection.resolvedPort)",
                name: "\(connection.resolvedDatabase).\(datasetName)",
                columns: Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0.type.description) }))
        }
        context.metrics.used(dataset)
        return .relation(CopyRelation(connection: connection, sql: selectSQL, schema: fields, batchRows: batchRows))
    }

    /// An extract is a view of its source: restoring it is running it.
    public func restore(_ context: StageContext) throws -> StageOutput? { try run(context) }

    private var datasetName: String {
        if let table {
            let parts = SQL.splitQualified(table)
            return "\(parts.schema ?? "public").\(parts.table)"
        }
        let digest = SHA256.hash(data: Data(query!.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        return "query.\(digest)"
    }
}

/// Rows of a SELECT, streamed by COPY each time it is scanned.
struct CopyRelation: Relation {
    let connection: String
    let sql: String
    let schema: [Field]
    let batchRows: Int

    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        let (sql, schema, batchRows, connection) = (self.sql, self.schema, self.batchRows, self.connection)
        let active = ActiveConnection()
        // Reading and decoding run on their own thread, so the server keeps
        // sending while the consumer aggregates the previous batches.
        try Self.pipelined(produce: { emit in
            try context.connections.with(connection) { connection in
                active.set(connection)
                defer { active.set(nil) }
                // One read-only snapshot for the whole COPY.
                try connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                defer { _ = try? connection.execute("ROLLBACK") }
                var decoder = BinaryCopyDecoder(schema: schema, capacity: batchRows)
                try connection.copyOut("COPY (\(sql)) TO STDOUT (FORMAT binary)") { row in
                    try decoder.decode(row)
                    if decoder.batch.count >= batchRows {
                        try context.cancellation.check()
                        let batch = decoder.takeBatch(capacity: batchRows)
                        context.metrics.read(rows: batch.count)
                        try emit(batch)
                    }
                }
                let last = decoder.takeBatch(capacity: 0)
                if last.count > 0 {
                    context.metrics.read(rows: last.count)
                    try emit(last)
                }
            }
        }, interrupt: { active.cancel() }, body)
    }
}

/// The connection a producer thread is using, so the consumer can interrupt it.
final class ActiveConnection: @unchecked Sendable {
    private let lock = NSLock()
    private var connection: PGConnection?
    func set(_ connection: PGConnection?) { lock.withLock { self.connection = connection } }
    func cancel() { lock.withLock { connection }?.cancel() }
}

