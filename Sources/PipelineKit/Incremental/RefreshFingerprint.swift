import Foundation

/// What makes a pipeline's results what they are, apart from its data and
/// as_of: each stage's type, inputs and resolved configuration (with as_of
/// left unresolved) and each variable's value. When it differs from the last
/// committed run's, incremental results could differ from a rebuild's, so
/// the run becomes a full refresh and says which part changed.
public struct RefreshFingerprint: Sendable, Codable, Equatable {
    /// Stage id → SHA-256 of its type, inputs and configuration.
    public var stages: [String: String]
    /// Variable name → SHA-256 of its value (values may be sensitive).
    public var variables: [String: String]

    public init(stages: [String: String], variables: [String: String]) {
        self.stages = stages
        self.variables = variables
    }

    public init(pipeline: PipelineDefinition) {
        stages = Dictionary(uniqueKeysWithValues: pipeline.stages.map { ($0.id, $0.refreshFingerprint) })
        variables = Dictionary(uniqueKeysWithValues: pipeline.variables.filter { $0.key != "as_of" }.map { ($0.key, LineageLog.sha256($0.value.text)) })
    }

    /// Why results could differ from those of `previous`; nil when they cannot.
    public func difference(from previous: RefreshFingerprint) -> String? {
        let changedStages = Set(stages.keys).union(previous.stages.keys).filter { stages[$0] != previous.stages[$0] }.sorted()
        guard !changedStages.isEmpty else { return nil }
        // Name the variables first: that is usually what someone changed on purpose.
        let changedVariables = Set(variables.keys).union(previous.variables.keys)
            .filter { variables[$0] != previous.variables[$0] }.sorted()
        if !changedVariables.isEmpty {
            let names = changedVariables.map { "'\($0)'" }.joined(separator: ", ")
            return "variable\(changedVariables.count > 1 ? "s" : "") \(names) changed since the last run"
        }
        let described = changedStages.map { id in
            stages[id] == nil ? "'\(id)' was removed" : previous.stages[id] == nil ? "'\(id)' was added" : "'\(id)' changed"
        }
        return "stage configuration changed: " + described.joined(separator: ", ")
    }
}
