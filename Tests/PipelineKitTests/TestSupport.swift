import Foundation
import XCTest
@testable import PipelineKit
import Stages

// Shared helpers for the PipelineKit unit tests. Nothing here connects anywhere.

/// A fixed instant so that the default `as_of` is deterministic: 2024-03-15 12:00:00 UTC.
let fixedNow = Date(timeIntervalSince1970: 1_710_504_000)

/// Environment used by the tests; never the process environment.
let testEnvironment: [String: String] = [
    "DOST_SOURCE_URL": "host=/tmp dbname=source",
    "DOST_WAREHOUSE_URL": "host=/tmp dbname=warehouse",
]

func loadOptions(environment: [String: String] = testEnvironment,
                 overrides: [(name: String, value: String)] = [],
                 asOf: CivilDate? = nil) -> LoadOptions {
    LoadOptions(environment: environment, variableOverrides: overrides, asOf: asOf, now: fixedNow)
}

/// Loads `text` as a pipeline file called `test.yaml`; fails the test when it does not load.
func loadPipeline(_ text: String, registry: StageRegistry = .standard,
                  options: LoadOptions = loadOptions(),
                  file: StaticString = #filePath, line: UInt = #line) throws -> PipelineDefinition {
    do {
        return try PipelineLoader(registry: registry).load(data: Data(text.utf8), file: "test.yaml", options: options)
    } catch let error as PipelineDefinitionError {
        XCTFail("expected the pipeline to load, got:\n\(error)", file: file, line: line)
        throw error
    }
}

/// Loads `data` expecting it to be rejected; returns the diagnostics (empty and a test failure when it loaded).
func loadDiagnostics(_ data: Data, registry: StageRegistry = .standard,
                     options: LoadOptions = loadOptions(),
                     file: StaticString = #filePath, line: UInt = #line) -> [Diagnostic] {
    do {
        let pipeline = try PipelineLoader(registry: registry).load(data: data, file: "test.yaml", options: options)
        XCTFail("expected the pipeline '\(pipeline.name)' to be rejected, but it loaded", file: file, line: line)
        return []
    } catch let error as PipelineDefinitionError {
        XCTAssertFalse(error.diagnostics.isEmpty, "an error without diagnostics", file: file, line: line)
        for diagnostic in error.diagnostics {
            // Command-line mistakes are located on the command line, not in the file.
            let expected = diagnostic.message.hasPrefix("--var") ? "--var" : "test.yaml"
            XCTAssertEqual(diagnostic.file, expected, file: file, line: line)
        }
        return error.diagnostics
    } catch {
        XCTFail("expected PipelineDefinitionError, got \(type(of: error)): \(error)", file: file, line: line)
        return []
    }
}

func loadDiagnostics(_ text: String, registry: StageRegistry = .standard,
                     options: LoadOptions = loadOptions(),
                     file: StaticString = #filePath, line: UInt = #line) -> [Diagnostic] {
    loadDiagnostics(Data(text.utf8), registry: registry, options: options, file: file, line: line)
}

/// Asserts exactly one diagnostic, at `line:column`, whose message contains every fragment.
@discardableResult
func assertSingleDiagnostic(_ diagnostics: [Diagnostic], at position: (Int, Int), contains fragments: [String],
                            file: StaticString = #filePath, line: UInt = #line) -> Diagnostic? {
    guard diagnostics.count == 1, let diagnostic = diagnostics.first else {
        XCTFail("expected one diagnostic, got \(diagnostics.count):\n\(diagnostics.map(\.description).joined(separator: "\n"))",
                file: file, line: line)
        return nil
    }
    assertDiagnostic(diagnostic, at: position, contains: fragments, file: file, line: line)
    return diagnostic
}

func assertDiagnostic(_ diagnostic: Diagnostic, at position: (Int, Int), contains fragments: [String],
                      file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual("\(diagnostic.line):\(diagnostic.column)", "\(position.0):\(position.1)",
                   "position of: \(diagnostic.message)", file: file, line: line)
    for fragment in fragments {
        XCTAssertTrue(diagnostic.message.contains(fragment),
                      "message '\(diagnostic.message)' does not contain '\(fragment)'", file: file, line: line)
    }
}

// MARK: - test-only stage types

/// Behaviour of scripted stages, keyed by a name written in the stage's config.
/// Each test registers its scripts under names of its own (a UUID prefix), so
/// tests running in the same process do not see each other's scripts.
final class Scripts: @unchecked Sendable {
    typealias Body = @Sendable (StageContext) throws -> Void
    static let shared = Scripts()
    private let lock = NSLock()
    private var bodies: [String: Body] = [:]

    func register(_ name: String, _ body: @escaping Body) {
        lock.withLock { bodies[name] = body }
    }

    func body(_ name: String) -> Body? { lock.withLock { bodies[name] } }
}

/// A stage that runs the script named by `config.script` and produces an empty relation.
struct ScriptedStage: Stage {
    static let type = "scripted"
    static let summary = "Test stage: runs a registered closure."
    static let produces = OutputKind.relation
    static let configKeys: [ConfigKey] = [
        .optional("script", .identifier, "the registered script to run"),
        .optional("note", .string, "free text, for interpolation tests"),
    ]

    let script: String?

    init(config: ConfigNode, build: StageBuild) throws {
        script = config["script"]?.string
    }

    func run(_ context: StageContext) throws -> StageOutput {
        if let script {
            guard let body = Scripts.shared.body(script) else {
                throw StageFailure.config("no script registered as '\(script)'")
            }
            try body(context)
        }
        return .relation(MaterializedRelation(Batch(schema: [Field("n", .int)])))
    }
}

/// A second test type, so that "known types" lists have more than one entry.
struct NoopStage: Stage {
    static let type = "noop"
    static let summary = "Test stage: does nothing."
    static let produces = OutputKind.relation
    static let configKeys: [ConfigKey] = []

    init(config: ConfigNode, build: StageBuild) throws {}

    func run(_ context: StageContext) throws -> StageOutput {
        .relation(MaterializedRelation(Batch(schema: [Field("n", .int)])))
    }
}

var testRegistry: StageRegistry {
    var registry = StageRegistry()
    registry.register(ScriptedStage.self)
    registry.register(NoopStage.self)
    return registry
}

/// A thread-safe value box for counters and logs shared with stage threads.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
    var current: Value { withLock { $0 } }
}
