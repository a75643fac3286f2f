import Foundation
import PipelineKit

/// Writes an input into a keyed warehouse table, idempotently, in one transaction.
public struct FactUpsert: PersistingStage {
    public static let type = "factUpsert"
    public static let summary = "Writes an input to a keyed warehouse table in one transaction: creates it when missing; into an empty table, one binary COPY; otherwise a binary COPY into a temp table and a merge touching only changed rows, deleting keys no longer produced (an incremental input: only within its changed groups)."
    public static let produces = OutputKind.table
    public static let configKeys: [ConfigKey] = [
        .required("from", .identifier, "the input to write"),
        .required("columns", .dictionary(.string), "the table's columns in order, name: type; each must exist in the input"),
    ] + WriteTarget.configKeys

    let from: String
    let fields: [Field]
    let target: WriteTarget

    public init(config: ConfigNode, build: StageBuild) throws {
        from = try build.input(config["from"], kind: .relation)
        fields = try build.fields(config["columns"])
        target = try WriteTarget(config: config, build: build)
        for name in target.key where !fields.contains(where: { $0.name == name }) {
            build.error(at: config["key"]!, "key column '\(name)' is not among 'columns'")
            throw StageBuild.Invalid()
        }
    }

    /// Every declared column must come from the input, in a type it can be written as.
    private func checkColumns(of input: [Field]) throws {
        for field in fields {
            let source = try requireField(field.name, in: input, of: "input '\(from)'")
            guard source.type.canBeWritten(as: field.type) else {
                throw StageFailure.config("column '\(field.name)' is \(source.type) in '\(from)' but declared \(field.type) for \(target.table)")
            }
        }
    }

    public func outputColumns(inputs: [String: [Field]]) throws -> [Field]? {
        if let input = inputs[from] { try checkColumns(of: input) }
        return fields
    }

    public func run(_ context: StageContext) throws -> StageOutput {
        let input = try context.relation(from)
        try checkColumns(of: input.schema)
        guard let partial = input as? PartialRelation else {
            var rows = 0
            _ = try target.write(columns: fields, context: context, deleteMissing: true) { emit in
                try input.scan(context.scan) { batch in
                    rows += batch.count
                    try emit(batch)
                }
            }
            context.metrics.produced(rows: rows)
            // After a full write the table holds exactly the input's rows: when
            // they are in memory already, downstream reads them there instead
            // of reading the table back.
            if let written = input as? MaterializedRelation {
                return .table(name: target.table, relation: MaterializedRelation(written.batch.projected(to: fields)))
            }
            return .table(name: target.table, relation: target.read(columns: fields))
        }
        // An incremental input replaces only its groups. The rows it replaces
        // are read first, so that what aggregates the table knows what moved.
        // Not in a retry: an earlier attempt may have committed before its
        // acknowledgement was lost, and the rows read would be its own. What
        // aggregates the table then reads it whole.
        let after = try partial.materialize(context.scan)
        let before = context.attempt > 1 ? nil : partial.scope.count == 0 ? Batch(schema: fields)
            : try target.read(columns: fields).restricted(to: partial.scope).materialize(context.scan)
        _ = try target.write(columns: fields, context: context, deleteMissing: true, scope: partial.scope.batch) { try $0(after) }
        context.metrics.produced(rows: after.count)
        guard let before else { return .table(name: target.table, relation: target.read(columns: fields)) }
        return .table(name: target.table, relation: ReplacedRows(table: target.read(columns: fields), before: before, after: after))
    }

    public var tablesWritten: [String] { [target.table] }

    public func persistedRows(of input: String) -> PersistedRows? {
        input == from ? PersistedRows(rows: target.read(columns: fields), key: target.key) : nil
    }

    public var restoresWithoutInputs: Bool { true }

    public func restore(_ context: StageContext) throws -> StageOutput? {
        .table(name: target.table, relation: target.read(columns: fields))
    }
}
