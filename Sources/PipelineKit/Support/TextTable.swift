import Foundation
/// Fixed-width text tables for terminals and logs.
public struct TextTable: Sendable, Codable {
    public var columns: [String]
    public var rows: [[String]]

    public init(columns: [String], rows: [[String]]) {
        self.columns = columns
        self.rows = rows
    }

    public var rendered: String {
        let widths = columns.indices.map { column in ([columns] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(columns), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
    }

    /// The rows as JSON objects keyed by column name.
    public var json: JSON {
        .array(rows.map { row in .object(Dictionary(uniqueKeysWithValues: zip(columns, row.map(JSON.string)))) })
    }
}
