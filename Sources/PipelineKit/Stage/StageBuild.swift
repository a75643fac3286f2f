import Foundation
/// What a stage type may consult while it decodes its configuration.
public struct StageBuild {
    /// Thrown by a stage initializer after it reported its problems.
    public struct Invalid: Error {
        public init() {}
    }

    public let stageID: String
    public let sink: DiagnosticSink
    /// Declared inputs with what each produces.
    public let inputs: [String: OutputKind]
    /// Listed inputs already reported as wrong (not a stage, or a stage that
    /// failed to declare itself); naming one fails without another message.
    public var brokenInputs: Set<String> = []
    public let connections: Set<String>
    public let connectionModes: [String: Bool]

    public func error(at node: ConfigNode, _ message: String) {
        sink.error(at: node, "stage '\(stageID)': \(message)")
    }

    /// Resolves a key naming one of the stage's inputs of the given kind.
    public func input(_ node: ConfigNode?, kind: OutputKind...) throws -> String {
        guard let node, let name = node.string else { throw Invalid() }
        // With a listed input already wrong, a name missing from the inputs is most likely the one meant.
        if brokenInputs.contains(name) || (inputs[name] == nil && !brokenInputs.isEmpty) { throw Invalid() }
        guard let actual = inputs[name] else {
            error(at: node, "'\(name)' is not one of this stage's inputs (\(inputs.keys.sorted().joined(separator: ", "))); add it to 'inputs'"
                  + Suggestion.didYouMean(name, in: Array(inputs.keys)))
            throw Invalid()
        }
        guard kind.contains(actual) || (actual == .table && kind.contains(.relation)) else {
            error(at: node, "input '\(name)' produces a \(actual.rawValue), but a \(kind.map(\.rawValue).joined(separator: " or ")) is needed here")
            throw Invalid()
        }
        return name
    }

    /// Resolves a key naming a pipeline connection.
    public func connection(_ node: ConfigNode?, writable: Bool = false) throws -> String {
        guard let node, let name = node.string else { throw Invalid() }
        guard connections.contains(name) else {
            error(at: node, "connection '\(name)' is not defined under 'connections'"
                  + Suggestion.didYouMean(name, in: Array(connections)))
            throw Invalid()
        }
        if writable, connectionModes[name] == true {
            error(at: node, "connection '\(name)' is read_only, but this stage writes to it")
            throw Invalid()
        }
        return name
    }

    /// Parses a declared column type.
    public func type(_ node: ConfigNode) throws -> DataType {
        guard let text = node.string, let type = DataType(declared: text) else {
            error(at: node, "unknown column type '\(node.string ?? node.kindName)'; use one of \(DataType.declarableNames)")
            throw Invalid()
        }
        return type
    }

    /// Parses a `name: type` mapping of declared columns.
    public func fields(_ node: ConfigNode?) throws -> [Field] {
        guard let node else { throw Invalid() }
        var fields: [Field] = []
        var failed = false
        for entry in node.entries {
            guard let type = try? type(entry.value) else { failed = true; continue }
            fields.append(Field(entry.key, type))
        }
        if failed { throw Invalid() }
        if fields.isEmpty {
            error(at: node, "at least one column is needed")
            throw Invalid()
        }
        return fields
    }
}
