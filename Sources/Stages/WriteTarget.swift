import Foundation
import PipelineKit

/// Where a stage writes a warehouse table: shared by factUpsert, metricRollup
/// and lookupBuild's `persist`, so all writes get the same guarantees.
struct WriteTarget: Sendable {
    let connection: String
    let table: String
    let key: [String]
    /// Secondary indexes, each a list of columns; created with the table, or
    /// on an existing one when missing (never dropped).
    let indexes: [[String]]

    static let configKeys: [ConfigKey] = [
        .required("connection", .identifier, "the warehouse connection"),
        .required("table", .identifier, "target table, schema.table; created when missing"),
        .required("key", .names, "the table's primary-key columns"),
        .optional("indexes", .list(.names), "secondary indexes, each a column or a list of columns; created when missing, never dropped"),
    ]

    init(config: ConfigNode, build: StageBuild) throws {
        connection = try build.connection(config["connection"], writable: true)
        table = config["table"]!.string!
        key = config["key"]!.strings!
        if key.isEmpty {
            build.error(at: config["key"]!, "at least one key column is needed")
            throw StageBuild.Invalid()
        }
        indexes = config["indexes"]?.items.map { $0.strings ?? [] } ?? []
        if let node = config["indexes"]?.items.first(where: { $0.strings?.isEmpty ?? true }) {
            build.error(at: node, "an index needs at least one column")
            throw StageBuild.Invalid()
        }
    }

    /// Merges the batches into the table in one transaction and records the
    /// counts and the dataset in the stage's metrics.
    func write(columns: [Field], context: StageContext, deleteMissing: Bool, scope: Batch? = nil, addable: Set<String> = [],
               batches: ((Batch) throws -> Void) throws -> Void) throws -> WriteCounts {
        for name in key where !columns.contains(where: { $0.name == name }) {
            throw StageFailure.config("key column '\(name)' is not among the columns written to \(table)")
        }
        for name in indexes.joined() where !columns.contains(where: { $0.name == name }) {
            throw StageFailure.config("index column '\(name)' is not among the columns written to \(table) (they are: \(columns.map(\.name).joined(separator: ", ")))")
        }
        let writer = TableWriter(table: table, columns: columns, key: key, addable: addable, indexes: indexes)
        return try context.connections.with(connection) { connection in
            let counts = try writer.write(connection, runID: context.runID, deleteMissing: deleteMissing, scope: scope,
                                          batches: batches) { connection, counts in
                try context.recordWrite(connectionName: self.connection, connection, table: table, counts: counts)
            }
            wrote(counts, columns: columns, connection: connection, context: context)
            return counts
        }
    }

    /// Records a write that would change nothing, without sending the rows:
    /// the table holds the `rows` the last run wrote and this one would write
    /// again. The run's refresh state and lineage are recorded as by `write`.
    func writeUnchanged(rows: Int, columns: [Field], context: StageContext) throws {
        let counts = WriteCounts(unchanged: rows)
        try context.connections.with(connection) { connection in
            try connection.transaction {
                try context.recordWrite(connectionName: self.connection, connection, table: table, counts: counts)
            }
            wrote(counts, columns: columns, connection: connection, context: context)
        }
    }

    private func wrote(_ counts: WriteCounts, columns: [Field], connection: PGConnection, context: StageContext) {
        context.metrics.wrote(counts)
        let parts = SQL.splitQualified(table)
        context.metrics.used(DatasetUse(
            direction: .output,
            namespace: "postgres://\(connection.resolvedHost):\(connection.resolvedPort)",
            name: "\(connection.resolvedDatabase).\(parts.schema ?? "public").\(parts.table)",
            columns: Dictionary(uniqueKeysWithValues: columns.map { ($0.name, $0.type.description) })))
    }

    /// Reads the table back, for `--select` runs that restore instead of recomputing.
    func read(columns: [Field]) -> CopyRelation {
        CopyRelation(connection: connection,
                     sql: "SELECT \(columns.map { SQL.ident($0.name) }.joined(separator: ", ")) FROM \(SQL.qualified(table))",
                     schema: columns, batchRows: 65_536)
    }
}

extension Batch {
    /// The position of a column, or a configuration error naming what exists.
    func require(_ name: String, in what: String) throws -> Int {
        guard let index = index(of: name) else {
            throw StageFailure.config("\(what) has no column '\(name)' (it has: \(schema.map(\.name).joined(separator: ", ")))")
        }
        return index
    }
}

func requireField(_ name: String, in schema: [Field], of what: String) throws -> Field {
    guard let field = schema.first(where: { $0.name == name }) else {
        throw StageFailure.config("\(what) has no column '\(name)' (it has: \(schema.map(\.name).joined(separator: ", ")))")
    }
    return field
}
