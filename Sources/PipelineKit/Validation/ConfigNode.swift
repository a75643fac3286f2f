import Foundation
import Yams

/// A located YAML node: the value plus where it was written, so that every
/// later complaint about it can name its line and column.
public struct ConfigNode: @unchecked Sendable {
    public let node: Node
    /// The key path for messages, e.g. `stages[2].config.table`.
    public let path: String
    /// Where the enclosing key was written, for nodes without a mark of their own.
    let fallbackLine: Int
    let fallbackColumn: Int

    public init(_ node: Node, path: String, line: Int = 1, column: Int = 1) {
        self.node = node
        self.path = path
        fallbackLine = line
        fallbackColumn = column
    }

    public var line: Int { node.mark?.line ?? fallbackLine }
    public var column: Int { node.mark?.column ?? fallbackColumn }

    // MARK: shape

    public var isMapping: Bool { node.mapping != nil }
    public var isSequence: Bool { node.sequence != nil }
    public var isScalar: Bool { node.scalar != nil }
    public var isNull: Bool { node.scalar.map { node.null != nil && $0.style == .plain } ?? false }

    public var kindName: String {
        if isMapping { return "a mapping" }
        if isSequence { return "a list" }
        if isNull { return "nothing (null)" }
        if int != nil && node.scalar?.style == .plain { return "a number" }
        if node.bool != nil && node.scalar?.style == .plain { return "a boolean" }
        return "a string"
    }

    // MARK: scalars

    /// The scalar text; nil for mappings, lists and null.
    public var string: String? { isNull ? nil : node.scalar?.string }
    public var int: Int? { node.scalar?.style == .plain ? yamlInt : node.scalar.flatMap { Int($0.string) } }
    public var bool: Bool? { node.bool }
    public var double: Double? { isBase60 ? nil : node.float ?? yamlInt.map(Double.init) }

    /// Yams reads YAML 1.1 numbers, base 60 among them (`1:30` is 90), and
    /// adds base-60 digits up without an overflow check: a scalar with a
    /// colon is not taken for a number here.
    private var yamlInt: Int? { isBase60 ? nil : node.int }
    var isBase60: Bool { node.scalar?.style == .plain && node.scalar?.string.contains(":") == true }

    // MARK: children

    public subscript(key: String) -> ConfigNode? {
        entries.first { $0.key == key }?.value
    }

    /// Keys and values of a mapping in file order.
    public var entries: [(key: String, keyNode: ConfigNode, value: ConfigNode)] {
        guard let mapping = node.mapping else { return [] }
        return mapping.map { pair in
            let key = pair.key.scalar?.string ?? "\(pair.key)"
            let keyNode = ConfigNode(pair.key, path: child(key), line: line, column: column)
            let keyMark = pair.key.mark
            return (key, keyNode, ConfigNode(pair.value, path: child(key),
                                             line: keyMark?.line ?? line, column: keyMark?.column ?? column))
        }
    }

    public var items: [ConfigNode] {
        guard let sequence = node.sequence else { return [] }
        return sequence.enumerated().map { index, item in
            ConfigNode(item, path: "\(path)[\(index)]", line: line, column: column)
        }
    }

    /// A string, or a list of strings, as a list.
    public var strings: [String]? {
        if let string { return [string] }
        guard isSequence else { return nil }
        let values = items.compactMap(\.string)
        return values.count == items.count ? values : nil
    }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
}
