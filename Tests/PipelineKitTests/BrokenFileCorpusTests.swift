import Foundation
import XCTest

/// A corpus of broken pipeline files (Tests/Fixtures/broken/*.yaml, expectations in
/// expectations.json next to them) fed to the real `runner` binary: every file must
/// be refused with exit status 2 and a located `FILE:LINE:COLUMN: message`, quickly,
/// without a crash, and without anything running.
final class BrokenFileCorpusTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/broken")

    struct Expectation: Decodable {
        /// `LINE:COLUMN` of the diagnostic that must be present.
        let at: String
        /// Substrings of that diagnostic's message.
        let contains: [String]
        /// When set, exactly this many problems: one mistake, one message.
        let problems: Int?
        /// A secret written in the file that must never be echoed back.
        let secret: String?
        let why: String
    }

    static func expectations() throws -> [String: Expectation] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("expectations.json"))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var result: [String: Expectation] = [:]
        for (name, value) in object where !name.hasPrefix("_") {
            let entry = try JSONSerialization.data(withJSONObject: value)
            result[name] = try JSONDecoder().decode(Expectation.self, from: entry)
        }
        return result
    }

    static func corpusFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: fixtures.path).filter { $0.hasSuffix(".yaml") }.sorted()
    }

    /// Environment for the child: the process environment without anything a fixture
    /// relies on being unset.
    static var childEnvironment: [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PIPELINEKIT_BROKEN_CORPUS_") }
    }

    // MARK: the corpus

    func testTheCorpusHasAtLeastThirtyFilesEachWithAnExpectation() throws {
        let files = try Self.corpusFiles()
        let expectations = try Self.expectations()
        XCTAssertGreaterThanOrEqual(files.count, 30, "the broken-file corpus shrank")
        XCTAssertEqual(Set(files), Set(expectations.keys),
                       "every fixture needs an expectation and every expectation a fixture")
        for (name, expectation) in expectations {
            XCTAssertNotNil(Self.position(expectation.at), "\(name): 'at' must be LINE:COLUMN, not \(expectation.at)")
            XCTAssertFalse(expectation.contains.isEmpty, "\(name): no expected message text")
        }
    }

    func testEveryBrokenFileIsRefusedByValidateWithItsLocatedDiagnostic() throws {
        let failures = try checkCorpus(command: ["validate"])
        XCTAssertTrue(failures.isEmpty, "\(failures.count) broken files were not refused as expected:\n\n" + failures.joined(separator: "\n\n"))
    }

    func testEveryBrokenFileIsRefusedByRunBeforeAnythingRuns() throws {
        // `run` loads the file the same way; if anything started, the connections
        // (sockets in a directory that does not exist) would fail with exit 1, and a
        // summary table with stage names would be printed on stdout.
        let failures = try checkCorpus(command: ["run"], extra: ["--as-of", "2020-10-15", "--jobs", "1"])
        XCTAssertTrue(failures.isEmpty, "\(failures.count) broken files were not refused as expected by run:\n\n" + failures.joined(separator: "\n\n"))
    }

    /// Runs every fixture and returns one message per fixture that was not refused as expected.
    func checkCorpus(command: [String], extra: [String] = []) throws -> [String] {
        let runner = try RunnerBinary.locate()
        let expectations = try Self.expectations()
        let files = try Self.corpusFiles()
        let failures = Collected()
        DispatchQueue.concurrentPerform(iterations: files.count) { index in
            let name = files[index]
            let path = Self.fixtures.appendingPathComponent(name).path
            guard let expectation = expectations[name] else { return }
            let problems: [String]
            do {
                let outcome = try RunnerBinary.run(runner, command + [path] + extra, environment: Self.childEnvironment,
                                                   timeout: 10)
                problems = Self.check(outcome, path: path, expectation: expectation)
            } catch {
                problems = ["could not run the runner: \(error)"]
            }
            if !problems.isEmpty {
                failures.append("\(name) (\(expectation.why)):\n  - " + problems.joined(separator: "\n  - "))
            }
        }
        return failures.values.sorted()
    }

    static func check(_ outcome: RunnerOutcome, path: String, expectation: Expectation) -> [String] {
        var problems: [String] = []
        if outcome.timedOut { problems.append("did not finish within 10 s (killed)") }
        if outcome.signalled { problems.append("crashed with signal \(outcome.status)") }
        if !outcome.signalled && !outcome.timedOut && outcome.status != 2 {
            problems.append("exit status \(outcome.status), expected 2")
        }
        let lines = outcome.stderr.split(separator: "\n").map(String.init)
        let prefix = "\(path):\(expectation.at): "
        let located = lines.filter { $0.hasPrefix(prefix) }
        if located.isEmpty {
            problems.append("no diagnostic at \(expectation.at)")
        } else if !located.contains(where: { line in expectation.contains.allSatisfy { line.contains($0) } }) {
            problems.append("the diagnostic at \(expectation.at) lacks \(expectation.contains)")
        }
        let diagnostics = lines.filter { $0.hasPrefix(path + ":") }
        for line in diagnostics {
            let rest = line.dropFirst(path.count + 1)
            let parts = rest.split(separator: ":", maxSplits: 2)
            if parts.count < 3 || Int(parts[0]) == nil || Int(parts[1]) == nil {
                problems.append("a diagnostic is not FILE:LINE:COLUMN: message: \(line)")
            }
        }
        if let count = expectation.problems, diagnostics.count != count {
            problems.append("\(diagnostics.count) diagnostics, expected exactly \(count)")
        }
        let summary = "problem\(diagnostics.count == 1 ? "" : "s") in \(path); nothing was run"
        if !outcome.stderr.contains("\(diagnostics.count) \(summary)") {
            problems.append("no closing line '\(diagnostics.count) \(summary)'")
        }
        if !outcome.stdout.isEmpty { problems.append("something was printed on stdout (did it run?): \(outcome.stdout.prefix(300))") }
        if let secret = expectation.secret, (outcome.stdout + outcome.stderr).contains(secret) {
            problems.append("the literal password '\(secret)' was echoed back")
        }
        if !problems.isEmpty { problems.append("stderr was:\n" + outcome.stderr.prefix(2000)) }
        return problems
    }

    static func position(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let line = Int(parts[0]), let column = Int(parts[1]) else { return nil }
        return (line, column)
    }

    // MARK: generated files

    func testAFiftyMegabyteFileIsRefusedQuicklyAtTheStart() throws {
        let directory = try temporaryDirectory()
        let path = directory.appendingPathComponent("huge.yaml").path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try handle.write(contentsOf: Data("pipeline: huge\ndescription: \"".utf8))
        let chunk = Data(repeating: UInt8(ascii: "x"), count: 1 << 20)
        for _ in 0..<50 { try handle.write(contentsOf: chunk) }
        try handle.write(contentsOf: Data("\"\nstages: []\n".utf8))
        try handle.close()
        XCTAssertGreaterThan(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0, 50 << 20)

        let outcome = try RunnerBinary.run(try RunnerBinary.locate(), ["validate", path], environment: Self.childEnvironment, timeout: 10)
        let problems = Self.check(outcome, path: path, expectation: Expectation(
            at: "1:1", contains: ["KiB", "limited to 1024 KiB"], problems: 1, secret: nil, why: "50 MiB file"))
        XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
        XCTAssertLessThan(outcome.seconds, 5, "refusing an oversized file should not take long")
    }

    func testAFileOneByteOverTheLimitIsRefusedAndOneAtTheLimitIsRead() throws {
        let directory = try temporaryDirectory()
        let runner = try RunnerBinary.locate()
        // A valid pipeline padded with a comment to exactly `size` bytes.
        func file(_ name: String, size: Int) throws -> String {
            let body = "pipeline: sized\nconnections:\n  src: \"host=/nonexistent dbname=x\"\nstages:\n  - id: a\n    type: pgExtract\n    config: {connection: src, table: t, columns: {id: bigint}}\n#"
            let padded = body + String(repeating: "x", count: size - body.utf8.count - 1) + "\n"
            XCTAssertEqual(padded.utf8.count, size)
            let path = directory.appendingPathComponent(name).path
            try padded.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let atLimit = try file("at-limit.yaml", size: 1 << 20)
        let accepted = try RunnerBinary.run(runner, ["validate", atLimit], environment: Self.childEnvironment, timeout: 10)
        XCTAssertEqual(accepted.status, 0, "a 1 MiB file is within the documented limit: \(accepted.stderr)")
        XCTAssertTrue(accepted.stdout.contains("valid (pipeline 'sized', 1 stages)"), accepted.stdout)

        let over = try file("over-limit.yaml", size: (1 << 20) + 1)
        let refused = try RunnerBinary.run(runner, ["validate", over], environment: Self.childEnvironment, timeout: 10)
        let problems = Self.check(refused, path: over, expectation: Expectation(
            at: "1:1", contains: ["limited to 1024 KiB"], problems: 1, secret: nil, why: "1 MiB + 1 byte"))
        XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
    }

    func testAMissingFileAndADirectoryAreRefusedAtLineOne() throws {
        let directory = try temporaryDirectory()
        let runner = try RunnerBinary.locate()
        for path in [directory.appendingPathComponent("does-not-exist.yaml").path, directory.path + "/"] {
            let outcome = try RunnerBinary.run(runner, ["validate", path], environment: Self.childEnvironment, timeout: 10)
            let problems = Self.check(outcome, path: path, expectation: Expectation(
                at: "1:1", contains: ["cannot read the file"], problems: 1, secret: nil, why: path))
            XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
        }
    }

    func testTheAliasBombIsRefusedWithinTheTimeLimitAndWithoutExhaustingMemory() throws {
        // 9 levels of 9 aliases: 387 million nodes once expanded.
        let path = Self.fixtures.appendingPathComponent("alias_bomb.yaml").path
        let outcome = try RunnerBinary.run(try RunnerBinary.locate(), ["validate", path], environment: Self.childEnvironment, timeout: 10)
        XCTAssertFalse(outcome.timedOut)
        XCTAssertFalse(outcome.signalled, "crashed: \(outcome.stderr.suffix(500))")
        XCTAssertEqual(outcome.status, 2)
        XCTAssertLessThan(outcome.seconds, 5)
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("broken-corpus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}

/// Strings appended from concurrently running closures.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ item: String) { lock.withLock { items.append(item) } }
    var values: [String] { lock.withLock { items } }
}

/// What a finished child process left behind.
struct RunnerOutcome {
    /// The exit status, or the signal number when `signalled`.
    var status: Int32
    var signalled: Bool
    var timedOut: Bool
    var seconds: Double
    var stdout: String
    var stderr: String
}

/// The `runner` executable built alongside these tests.
enum RunnerBinary {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Next to the test bundle first (the same build), then the usual scratch paths.
    static func locate() throws -> URL {
        var candidates: [URL] = []
        if let given = ProcessInfo.processInfo.environment["PIPELINEKIT_RUNNER"], !given.isEmpty {
            candidates.append(URL(fileURLWithPath: given))
        }
        for bundle in [Bundle.main] + Bundle.allBundles {
            candidates.append(bundle.bundleURL.appendingPathComponent("runner"))
            candidates.append(bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("runner"))
        }
        if let executable = CommandLine.arguments.first {
            candidates.append(URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("runner"))
        }
        for scratch in [".build-faults", ".build"] {
            candidates.append(repositoryRoot.appendingPathComponent("\(scratch)/debug/runner"))
        }
        var isDirectory: ObjCBool = false
        if let found = candidates.first(where: {
            FileManager.default.isExecutableFile(atPath: $0.path)
                && FileManager.default.fileExists(atPath: $0.path, isDirectory: &isDirectory) && !isDirectory.boolValue
        }) {
            return found
        }
        throw NSError(domain: "RunnerBinary", code: 1, userInfo: [NSLocalizedDescriptionKey:
            "no runner executable found (build it with `swift build --build-tests`); looked at \(candidates.map(\.path))"])
    }

    static func run(_ executable: URL, _ arguments: [String], environment: [String: String], timeout: TimeInterval) throws -> RunnerOutcome {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("runner-out-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("stdout"), err = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        process.currentDirectoryURL = repositoryRoot
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        let started = Date()
        try process.run()
        var timedOut = false
        while process.isRunning {
            if Date().timeIntervalSince(started) > timeout {
                timedOut = true
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                break
            }
            usleep(5_000)
        }
        process.waitUntilExit()
        return RunnerOutcome(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal && !timedOut,
                             timedOut: timedOut, seconds: Date().timeIntervalSince(started),
                             stdout: String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self),
                             stderr: String(decoding: (try? Data(contentsOf: err)) ?? Data(), as: UTF8.self))
    }
}
