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
    /// types (each stored as the batch stores it); a configuration error
    /// names a missing or differently stored column.
    public func projected(to fields: [Field]) throws -> Batch {
        Batch(columns: try fields.map { field in
            guard let index = index(of: field.name) else {
                throw StageFailure.config("column '\(field.name)' is missing; the rows have \(schema.map(\.name).joined(separator: ", "))")
            }
            guard columns[index].field.type.storage == field.type.storage else {
                throw StageFailure.config("column '\(field.name)' is stored as \(columns[index].field.type), not as \(field.type)")
            }
            var column = columns[index]
            column.relabel(field)
            return column
        })
    }

    public mutating func append(row values: [Value]) {
        precondition(values.count == columns.count, "row width does not match the batch")
        for index in columns.indices { columns[index].append(values[index]) }
    }
}
