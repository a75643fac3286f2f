import Foundation

/// Groups named by one or two integer key columns, e.g. (user_id, program_id).
public struct KeyScope: Sendable {
    public let columns: [String]
    /// Values of the first key column, one per group.
    public let first: [Int64]
    /// Values of the second key column; empty for a single-column key.
    public let second: [Int64]

    public init(columns: [String], first: [Int64], second: [Int64] = []) {
        precondition(columns.count == 1 || columns.count == 2, "a key scope has one or two columns")
        precondition(columns.count == 1 ? second.isEmpty : second.count == first.count, "one value per column and group")
        self.columns = columns
        self.first = first
        self.second = second
    }

    public var count: Int { first.count }

    /// The groups as rows of bigint key columns, e.g. for a writer's scope.
    public var batch: Batch {
        var batch = Batch(schema: columns.map { Field($0, .bigint) }, capacity: count)
        batch.columns[0].ints = first
        if columns.count > 1 { batch.columns[1].ints = second }
        return batch
    }

    /// The groups in `parts` slices of about equal size (fewer when there are fewer groups).
    public func split(into parts: Int) -> [KeyScope] {
        let size = max(1, (count + parts - 1) / max(1, parts))
        return stride(from: 0, to: count, by: size).map { start in
            let end = min(start + size, count)
            return KeyScope(columns: columns, first: Array(first[start..<end]),
                            second: second.isEmpty ? [] : Array(second[start..<end]))
        }
    }

    /// A predicate selecting these groups, for a query on `qualifier`'s columns.
    /// Keys are inlined as array literals (COPY takes no parameters); they are integers.
    public func sqlPredicate(qualifier: String? = nil) -> String {
        func column(_ name: String) -> String { (qualifier.map { "\($0)." } ?? "") + SQL.ident(name) }
        func array(_ values: [Int64]) -> String { "'{\(values.map(String.init).joined(separator: ","))}'::bigint[]" }
        if columns.count == 1 { return "\(column(columns[0])) = ANY (\(array(first)))" }
        return "(\(column(columns[0])), \(column(columns[1]))) IN (SELECT * FROM unnest(\(array(first)), \(array(second))))"
    }
}

/// A relation read from a source whose new rows can be told apart: in an
/// incremental run it also offers only the rows changed since the last run.
public protocol ChangeTrackedRelation: Relation {
    /// Rows not taken into account by the last committed run; nil in a full
    /// refresh, where every row counts as new.
    var changes: (any Relation)? { get }
}

/// A relation that can read only the rows of some groups, in the database.
public protocol KeyRestrictable: Relation {
    func restricted(to scope: KeyScope) -> any Relation
    /// The same rows as `restricted(to:)`, for a source more likely indexed by
    /// the first key column alone than by all of them.
    func restrictedByFirstColumnToo(to scope: KeyScope) -> any Relation
    /// As `restricted(to:)`, without the rows whose timestamptz `column` is
    /// at or after `micros` (µs since 2000-01-01 UTC); a source that cannot
    /// tell keeps them, so the caller still decides by the time itself.
    func restricted(to scope: KeyScope, before micros: Int64, in column: String) -> any Relation
}

extension KeyRestrictable {
    public func restrictedByFirstColumnToo(to scope: KeyScope) -> any Relation { restricted(to: scope) }
    public func restricted(to scope: KeyScope, before micros: Int64, in column: String) -> any Relation { restricted(to: scope) }
}

/// A relation that knows which of its columns no two of its rows share (a
/// unique index covers them), whatever rows the source gains later.
public protocol UniquelyKeyed: Relation {
    var uniqueColumns: Set<String> { get }
}

/// The result of an incremental computation: rows for the groups in `scope`
/// only. A writer replaces exactly those groups: a group in scope without a
/// row no longer exists.
public struct PartialRelation: Relation {
    public let rows: any Relation
    public let scope: KeyScope

    public init(rows: any Relation, scope: KeyScope) {
        self.rows = rows
        self.scope = scope
    }

    public var schema: [Field] { rows.schema }
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws { try rows.scan(context, body) }
}

/// No rows.
public struct EmptyRelation: Relation {
    public let schema: [Field]
    public init(schema: [Field]) { self.schema = schema }
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {}
}

/// A table after an incremental write, with the versions before and after
/// of the rows that write replaced, so that a stage aggregating the table
/// can redo only the aggregates those rows belong to.
public struct ReplacedRows: Relation {
    public let table: any Relation
    public let before: Batch
    public let after: Batch

    public init(table: any Relation, before: Batch, after: Batch) {
        self.table = table
        self.before = before
        self.after = after
    }

    public var schema: [Field] { table.schema }
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws { try table.scan(context, body) }
}
