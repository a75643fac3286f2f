import Foundation
/// A slice of a relation's rows, column by column.
public struct Batch: Sendable {
    public var columns: [Column]

    public init(columns: [Column]) { self.columns = columns }

    public init(schema: [Field], capacity: Int = 0) {
        columns = schema.map { Column($0, capacity: capacity) }
    }

    public var schema: [Field] { columns.map(\.field) }
    public var count: Int { columns.isEmpty ? 0 : columns[0].count }

    public func index(of name: String) -> Int? { columns.firstIndex { $0.field.name == name } }

    public func column(_ name: String) -> Column? { index(of: name).map { columns[$0] } }

    public func row(_ row: Int) -> [Value] { columns.map { $0.value(at: row) } }

    /// The columns named by `fields`, in that order and labelled with their
    /// types. Each must exist and be stored as its field's type is (callers check).
    public func projected(to fields: [Field]) -> Batch {
        Batch(columns: fields.map { field in
            var column = columns[index(of: field.name)!]
            column.relabel(field)
            return column
        })
    }

    public mutating func append(row values: [Value]) {
        precondition(values.count == columns.count, "row width does not match the batch")
        for index in columns.indices { columns[index].append(values[index]) }
    }
}
