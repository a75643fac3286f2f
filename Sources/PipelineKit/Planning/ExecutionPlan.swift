import Foundation
/// The stages of a pipeline in dependency order, and what `--select` keeps.
public struct ExecutionPlan: Sendable {
    /// Stage ids in a topological order (inputs before the stages reading them;
    /// ties keep file order so plans are stable).
    public let order: [String]
    public let inputs: [String: [String]]
    /// Stages that will run; the others are upstream stages whose persisted
    /// output is restored instead.
    public let selected: Set<String>

    public init(pipeline: PipelineDefinition, selectors: [String] = []) throws {
        let ids = pipeline.stages.map(\.id)
        let inputs = Dictionary(uniqueKeysWithValues: pipeline.stages.map { ($0.id, $0.inputs) })
        if let cycle = Self.findCycle(ids: ids, inputs: inputs) {
            throw PlanError.cycle(cycle)
        }
        self.inputs = inputs
        order = Self.topologicalOrder(ids: ids, inputs: inputs)
        selected = try Self.select(selectors, ids: ids, inputs: inputs)
    }

    public func dependents(of id: String) -> [String] {
        order.filter { inputs[$0, default: []].contains(id) }
    }

    /// Every stage downstream of `id`, transitively.
    public func downstream(of id: String) -> Set<String> {
        Self.downstream(of: id, ids: order, inputs: inputs)
    }

    static func downstream(of id: String, ids: [String], inputs: [String: [String]]) -> Set<String> {
        var result: Set<String> = []
        var frontier = [id]
        while let next = frontier.popLast() {
            for candidate in ids where inputs[candidate, default: []].contains(next) && result.insert(candidate).inserted {
                frontier.append(candidate)
            }
        }
        return result
    }

    /// Kahn's algorithm; among stages ready at once, the earliest in the file goes first.
    static func topologicalOrder(ids: [String], inputs: [String: [String]]) -> [String] {
        let known = Set(ids)
        let position = Dictionary(ids.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        var waitingFor: [String: Int] = [:]
        var dependents: [String: [String]] = [:]
        for id in ids {
            let needed = Set(inputs[id, default: []].filter(known.contains))
            waitingFor[id] = needed.count
            for input in needed { dependents[input, default: []].append(id) }
        }
        // Ready stages by file position: a sorted array stays small, as few are ready at a time.
        var ready = ids.filter { waitingFor[$0] == 0 }
        var order: [String] = []
        order.reserveCapacity(ids.count)
        while !ready.isEmpty {
            let next = ready.removeFirst()
            order.append(next)
            for dependent in dependents[next, default: []] {
                waitingFor[dependent]! -= 1
                if waitingFor[dependent] == 0 {
                    let at = ready.firstIndex { position[$0]! > position[dependent]! } ?? ready.count
                    ready.insert(dependent, at: at)
                }
            }
        }
        return order
    }

    /// The stages on one cycle, in order, or nil when the graph is acyclic.
    public static func findCycle(ids: [String], inputs: [String: [String]]) -> [String]? {
        enum Mark { case visiting, done }
        var marks: [String: Mark] = [:]
        var stack: [String] = []
        func visit(_ id: String) -> [String]? {
            if marks[id] == .done { return nil }
            if marks[id] == .visiting {
                return Array(stack[stack.firstIndex(of: id)!...])
            }
            marks[id] = .visiting
            stack.append(id)
            for input in inputs[id, default: []] where inputs[input] != nil {
                if let cycle = visit(input) { return cycle }
            }
            stack.removeLast()
            marks[id] = .done
            return nil
        }
        for id in ids {
            // Report the cycle in data-flow order (input before reader).
            if let cycle = visit(id) { return cycle.reversed() }
        }
        return nil
    }

    static func select(_ selectors: [String], ids: [String], inputs: [String: [String]]) throws -> Set<String> {
        guard !selectors.isEmpty else { return Set(ids) }
        var selected: Set<String> = []
        for selector in selectors {
            let withDownstream = selector.hasSuffix("+")
            let id = withDownstream ? String(selector.dropLast()) : selector
            guard ids.contains(id) else {
                throw PlanError.unknownStage(id, suggestion: Suggestion.closest(to: id, in: ids))
            }
            selected.insert(id)
            if withDownstream { selected.formUnion(downstream(of: id, ids: ids, inputs: inputs)) }
        }
        return selected
    }
}

public enum PlanError: Error, CustomStringConvertible {
    case cycle([String])
    case unknownStage(String, suggestion: String?)

    public var description: String {
        switch self {
        case .cycle(let stages): "the stages form a cycle: \((stages + [stages[0]]).joined(separator: " → "))"
        case let .unknownStage(id, suggestion):
            "--select \(id): no such stage" + (suggestion.map { "; did you mean '\($0)'?" } ?? "")
        }
    }
}
