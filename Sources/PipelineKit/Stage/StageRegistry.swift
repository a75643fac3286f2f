import Foundation
/// The stage types a pipeline may use, by `type:` name.
public struct StageRegistry: Sendable {
    private(set) var types: [String: any Stage.Type] = [:]

    public init() {}

    public mutating func register(_ type: any Stage.Type) {
        precondition(types[type.type] == nil, "stage type '\(type.type)' registered twice")
        types[type.type] = type
    }

    public func type(named name: String) -> (any Stage.Type)? { types[name] }

    public var names: [String] { types.keys.sorted() }

    public var all: [any Stage.Type] { names.compactMap { types[$0] } }
}
