import Foundation

/// Renders values in COPY's text format.
enum CopyTextEncoder {
    static func append(_ column: Column, row: Int, to line: inout String) {
        if column.isNull(row) {
            line += "\\N"
            return
        }
        switch column.field.type {
        case .smallint, .int, .bigint: line += String(column.ints[row])
        case .bool: line += column.ints[row] != 0 ? "t" : "f"
        case .date: line += CivilDate(pgDays: column.ints[row]).description
        case .timestamptz: line += PGTime.format(micros: column.ints[row])
        case .numeric(_, let scale): line += decimal(column.ints[row], scale: scale)
        case .double: line += "\(column.doubles[row])"
        case .text: escape(column.texts[row], into: &line)
        }
    }

    static func decimal(_ value: Int64, scale: Int) -> String {
        guard scale > 0 else { return String(value) }
        let magnitude = value.magnitude
        var divisor: UInt64 = 1
        for _ in 0..<scale { divisor *= 10 }
        let fraction = String(magnitude % divisor)
        return (value < 0 ? "-" : "") + String(magnitude / divisor) + "."
            + String(repeating: "0", count: scale - fraction.count) + fraction
    }

    /// Works on Unicode scalars: Swift folds "\r\n" into one Character.
    private static func escape(_ text: String, into line: inout String) {
        guard text.unicodeScalars.contains(where: { $0 == "\\" || $0 == "\t" || $0 == "\n" || $0 == "\r" }) else {
            line += text
            return
        }
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": line += "\\\\"
            case "\t": line += "\\t"
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            default: line.unicodeScalars.append(scalar)
            }
        }
    }
}
