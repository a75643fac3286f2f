import Foundation
import PipelineKit

/// The throwaway PostgreSQL cluster the integration tests use: the one
/// `scripts/test` started (PIPELINEKIT_TEST_PG), or one started here with the
/// project's own script and stopped when the test process exits.
enum TestDatabase {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let conninfo: String = {
        if let given = ProcessInfo.processInfo.environment["PIPELINEKIT_TEST_PG"], !given.isEmpty { return given }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pipelinekit-xctest-\(getpid())").path
        let started = try! shell(["scripts/pg-cluster", "start", directory])
        atexit { TestDatabase.stopOwnCluster() }
        ownCluster = directory
        return started.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    nonisolated(unsafe) private static var ownCluster: String?

    private static func stopOwnCluster() {
        if let ownCluster { _ = try? shell(["scripts/pg-cluster", "stop", ownCluster]) }
    }

    /// Creates a fresh database and returns its conninfo.
    static func createDatabase(_ prefix: String) throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let admin = try PGConnection(ConnInfo(conninfo + " dbname=postgres"), applicationName: "pipelinekit-tests")
        try admin.execute("CREATE DATABASE \(SQL.ident(name))")
        return conninfo + " dbname=\(name)"
    }

    static func connect(_ conninfo: String) throws -> PGConnection {
        try PGConnection(ConnInfo(conninfo), applicationName: "pipelinekit-tests")
    }

    /// Runs a command from the repository root and returns its standard output.
    ///
    /// posix_spawn and waitpid rather than Foundation's Process: a server
    /// started by the command inherits its descriptors, and Process's exit
    /// monitoring does not return reliably from inside async tests.
    @discardableResult
    static func shell(_ arguments: [String]) throws -> String {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("shell-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let command = "cd \"$1\" && shift && exec \"$@\""
        let argv = ["/bin/sh", "-c", command, "sh", repositoryRoot.path] + arguments
        var pointers = argv.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, &pointers, environ)
        guard spawned == 0 else {
            throw NSError(domain: "shell", code: Int(spawned), userInfo: [NSLocalizedDescriptionKey: "cannot start \(arguments[0])"])
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let exitCode = (status >> 8) & 0xff
        guard status & 0x7f == 0, exitCode == 0 else {
            throw NSError(domain: "shell", code: Int(exitCode),
                          userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")) exited with status \(status)"])
        }
        return String(decoding: FileManager.default.contents(atPath: outputPath) ?? Data(), as: UTF8.self)
    }

    /// A table's rows as COPY text lines, sorted, for exact comparison.
    static func rows(_ connection: PGConnection, _ sql: String) throws -> [String] {
        try connection.query(sql).rows.map { row in row.map { $0 ?? "NULL" }.joined(separator: "|") }.sorted()
    }
}
