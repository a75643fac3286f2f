import Crypto
import Foundation

/// An append-only JSON-lines file of OpenLineage events in which every line
/// carries the SHA-256 of the line before it, so that editing, removing or
/// reordering lines is detectable (`LineageVerifier`).
public final class LineageLog: @unchecked Sendable {
    public static let chainFacet = "pipelinekit_chain"
    private let lock = NSLock()
    private let handle: FileHandle
    public let path: String
    public private(set) var lastHash: String

    /// Opens (creating when needed) the log. A last line cut short by a crash
    /// is closed with a newline and skipped: the chain continues from the
    /// last complete line.
    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil)
        }
        let existing = try Data(contentsOf: url)
        lastHash = LineageLog.lastCompleteHash(existing)
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        if let last = existing.last, last != UInt8(ascii: "\n") {
            try handle.write(contentsOf: Data("\n".utf8))
        }
    }

    deinit { try? handle.close() }

    public static func sha256(_ line: some StringProtocol) -> String {
        SHA256.hash(data: Data(line.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The hash of the last line that parses as an event; "" for a new log.
    static func lastCompleteHash(_ data: Data) -> String {
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n").reversed() where JSON.parse(line) != nil {
            return sha256(line)
        }
        return ""
    }

    /// Appends one event, adding the chain facet, and returns the line's hash.
    @discardableResult
    public func append(_ event: JSON) throws -> String {
        try lock.withLock {
            guard case .object(var object) = event, case .object(var run)? = object["run"] else {
                throw StageFailure.config("a lineage event needs a run object")
            }
            var facets: [String: JSON] = run["facets"].flatMap { if case .object(let f) = $0 { f } else { nil } } ?? [:]
            facets[Self.chainFacet] = .object([
                "_producer": .string(OpenLineage.producer),
                "_schemaURL": .string(OpenLineage.facetSchema("ChainRunFacet")),
                "previousLineSHA256": .string(lastHash),
            ])
            run["facets"] = .object(facets)
            object["run"] = .object(run)
            let line = try JSON.object(object).line()
            try handle.write(contentsOf: Data((line + "\n").utf8))
            lastHash = Self.sha256(line)
            return lastHash
        }
    }
}
