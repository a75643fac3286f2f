import Foundation

/// The documented shape of a configuration key. One declaration per key
/// drives validation, `runner stages` and the README's reference tables.
public struct ConfigKey: Sendable {
    public var name: String
    public var shape: ConfigShape
    public var required: Bool
    public var doc: String

    public init(_ name: String, _ shape: ConfigShape, required: Bool = false, _ doc: String) {
        self.name = name
        self.shape = shape
        self.required = required
        self.doc = doc
    }

    public static func required(_ name: String, _ shape: ConfigShape, _ doc: String) -> ConfigKey {
        ConfigKey(name, shape, required: true, doc)
    }

    public static func optional(_ name: String, _ shape: ConfigShape, _ doc: String) -> ConfigKey {
        ConfigKey(name, shape, required: false, doc)
    }
}

/// What a configuration value may look like.
public indirect enum ConfigShape: Sendable {
    case string
    case identifier
    case integer(min: Int? = nil, max: Int? = nil)
    case number
    case boolean
    case date
    case duration
    /// A string or a list of strings.
    case names
    case list(ConfigShape)
    /// A mapping with exactly these keys.
    case object([ConfigKey])
    /// A mapping from free-form names to values of one shape.
    case dictionary(ConfigShape)
    /// One of several shapes, tried in order (e.g. a scalar shorthand or a mapping).
    case either([ConfigShape])
    /// One of a fixed set of words.
    case choice([String])
    /// Any value; the stage checks it itself.
    case any

    public var summary: String {
        switch self {
        case .string: "string"
        case .identifier: "name"
        case .integer(let min?, let max?): "integer \(min)–\(max)"
        case .integer(let min?, nil): "integer ≥ \(min)"
        case .integer(nil, let max?): "integer ≤ \(max)"
        case .integer: "integer"
        case .number: "number"
        case .boolean: "boolean"
        case .date: "date YYYY-MM-DD"
        case .duration: "duration (e.g. 500ms, 2s, 1m; at most 24h)"
        case .names: "name or list of names"
        case .list(let item): "list of \(item.summary)"
        case .object: "mapping"
        case .dictionary(let value): "mapping of name → \(value.summary)"
        case .either(let shapes): shapes.map(\.summary).joined(separator: " or ")
        case .choice(let words): words.joined(separator: "|")
        case .any: "any"
        }
    }
}

/// Checks a node against a shape, reporting every mismatch with its location.
public struct ConfigChecker {
    public let sink: DiagnosticSink

    public init(sink: DiagnosticSink) { self.sink = sink }

    /// Returns false when the node does not fit (diagnostics were recorded).
    @discardableResult
    public func check(_ node: ConfigNode, against shape: ConfigShape, what: String) -> Bool {
        switch shape {
        case .any:
            return true
        case .string:
            return expect(node.string != nil && node.isScalar, node, "\(what) must be a string, not \(node.kindName)")
        case .identifier:
            guard let text = node.string, node.isScalar else {
                return expect(false, node, "\(what) must be a name, not \(node.kindName)")
            }
            return expect(!text.isEmpty && !text.contains("\0"), node, "\(what) must be a non-empty name")
        case .integer(let min, let max):
            guard let value = node.int, node.node.scalar?.style == .plain else {
                let base60 = node.isBase60 ? " (base-60 numbers such as 1:30 are not read; write the number, e.g. 90)" : ""
                return expect(false, node, "\(what) must be a whole number, not \(node.kindName) '\(node.string ?? "")'\(base60)")
            }
            if let min, value < min {
                return expect(false, node, "\(what) must be at least \(min), not \(value)")
            }
            if let max, value > max {
                return expect(false, node, "\(what) must be at most \(max), not \(value)")
            }
            return true
        case .number:
            return expect(node.double != nil && node.node.scalar?.style == .plain, node,
                          "\(what) must be a number, not \(node.kindName)")
        case .boolean:
            return expect(node.bool != nil && node.node.scalar?.style == .plain, node,
                          "\(what) must be true or false, not \(node.kindName) '\(node.string ?? "")'")
        case .date:
            guard let text = node.string, CivilDate(written: text) != nil else {
                return expect(false, node, "\(what) must be a date YYYY-MM-DD, not '\(node.string ?? node.kindName)'")
            }
            return true
        case .duration:
            guard let seconds = node.string.flatMap(DurationText.seconds) else {
                return expect(false, node, "\(what) must be a duration such as 500ms, 2s or 1m, not '\(node.string ?? node.kindName)'")
            }
            return expect(seconds <= DurationText.maxSeconds, node, "\(what) must be at most 24h, not '\(node.string ?? "")'")
        case .names:
            return expect(node.strings != nil, node, "\(what) must be a name or a list of names, not \(node.kindName)")
        case .choice(let words):
            guard let text = node.string, words.contains(text) else {
                let given = node.string ?? node.kindName
                return expect(false, node, "\(what) must be one of \(words.joined(separator: ", ")), not '\(given)'"
                              + Suggestion.didYouMean(given, in: words))
            }
            return true
        case .list(let item):
            guard node.isSequence else {
                return expect(false, node, "\(what) must be a list, not \(node.kindName)")
            }
            var ok = true
            for (index, element) in node.items.enumerated() {
                // An item that names itself (a stage's id) is easier to find by its name than by its index.
                let name = element.isMapping ? element["id"]?.string.map { " (id '\($0)')" } ?? "" : ""
                ok = check(element, against: item, what: "\(what)[\(index)]\(name)") && ok
            }
            return ok
        case .dictionary(let value):
            guard node.isMapping else {
                return expect(false, node, "\(what) must be a mapping, not \(node.kindName)")
            }
            var ok = true
            for entry in node.entries {
                ok = check(entry.value, against: value, what: "\(what).\(entry.key)") && ok
            }
            return ok
        case .object(let keys):
            return checkObject(node, keys: keys, what: what)
        case .either(let shapes):
            // Pick the alternative whose kind matches, so the message is about the right one.
            for shape in shapes where shape.accepts(kindOf: node) {
                return check(node, against: shape, what: what)
            }
            return expect(false, node, "\(what) must be \(shapes.map(\.summary).joined(separator: " or ")), not \(node.kindName)")
        }
    }

    private func checkObject(_ node: ConfigNode, keys: [ConfigKey], what: String) -> Bool {
        guard node.isMapping else {
            return expect(false, node, "\(what) must be a mapping, not \(node.kindName)")
        }
        var ok = true
        let known = keys.map(\.name)
        for entry in node.entries {
            guard let key = keys.first(where: { $0.name == entry.key }) else {
                sink.error(at: entry.keyNode, "unknown key '\(entry.key)' in \(what)"
                           + (Suggestion.closest(to: entry.key, in: known).map { "; did you mean '\($0)'?" }
                              ?? "; allowed keys: \(known.joined(separator: ", "))"))
                ok = false
                continue
            }
            if entry.value.isNull && key.required {
                sink.error(at: entry.value, "'\(entry.key)' in \(what) has no value; expected \(key.shape.summary)")
                ok = false
                continue
            }
            ok = check(entry.value, against: key.shape, what: "'\(entry.key)'") && ok
        }
        for key in keys where key.required && node[key.name] == nil {
            sink.error(at: node, "missing required key '\(key.name)' in \(what) (\(key.doc))")
            ok = false
        }
        return ok
    }

    private func expect(_ condition: Bool, _ node: ConfigNode, _ message: @autoclosure () -> String) -> Bool {
        if !condition { sink.error(at: node, message()) }
        return condition
    }
}

extension ConfigShape {
    func accepts(kindOf node: ConfigNode) -> Bool {
        switch self {
        case .object, .dictionary: node.isMapping
        case .list: node.isSequence
        case .names: node.isSequence || node.isScalar
        case .any: true
        default: node.isScalar
        }
    }
}
