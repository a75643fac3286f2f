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
    @discardableResult
    static func shell(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "shell", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus)"])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// A table's rows as COPY text lines, sorted, for exact comparison.
    static func rows(_ connection: PGConnection, _ sql: String) throws -> [String] {
        try connection.query(sql).rows.map { row in row.map { $0 ?? "NULL" }.joined(separator: "|") }.sorted()
    }
}
