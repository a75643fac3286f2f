import Foundation
/// A slice of a relation's rows, column by column.
public struct Batch: Sendable {
    public var columns: [Column]

    public init(columns: [Column]) { self.columns = columns }

    public init(schema: [Field], capacity: Int = 0) {
        columns = schema.map { Column($0, capacity: capacity) }
    }

    public var schema: [Field] { columns.map(\.field) }
    public var count: Int { columns.first?.count ?? 0 }

    public func index(of name: String) -> Int? { columns.firstIndex { $0.field.name == name } }

    public func column(_ name: String) -> Column? { index(of: name).map { columns[$0] } }

    public func row(_ row: Int) -> [Value] { columns.map { $0.value(at: row) } }

    public mutating func append(row values: [Value]) {
        precondition(values.count == columns.count, "row width does not match the batch")
        for index in columns.indices { columns[index].append(values[index]) }
    }
}
