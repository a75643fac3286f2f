import Foundation
/// One problem in a pipeline file, located to the character.
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible, Comparable {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "\(file):\(line):\(column): \(message)" }

    public static func < (a: Diagnostic, b: Diagnostic) -> Bool {
        (a.file, a.line, a.column, a.message) < (b.file, b.line, b.column, b.message)
    }
}

/// Every problem found while loading a pipeline file; nothing runs when there is one.
public struct PipelineDefinitionError: Error, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Collects diagnostics while a pipeline loads, so that all of them are reported at once.
public final class DiagnosticSink: @unchecked Sendable {
    public let file: String
    public private(set) var diagnostics: [Diagnostic] = []

    public init(file: String) { self.file = file }

    public func error(line: Int, column: Int, _ message: String) {
        let diagnostic = Diagnostic(file: file, line: line, column: column, message: message)
        if !diagnostics.contains(diagnostic) { diagnostics.append(diagnostic) }
    }

    public func error(at node: ConfigNode, _ message: String) {
        error(line: node.line, column: node.column, message)
    }

    /// Adds a diagnostic located in another file (e.g. the command line).
    public func append(_ diagnostic: Diagnostic) {
        if !diagnostics.contains(diagnostic) { diagnostics.append(diagnostic) }
    }

    public var hasErrors: Bool { !diagnostics.isEmpty }

    public func sorted() -> [Diagnostic] { diagnostics.sorted() }
}
