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
        if let reason = Self.unusable(path) { throw LineageLogUnusable(path: path, reason: reason) }
        do {
            try Self.createDirectories(url.deletingLastPathComponent().path, for: path)
            if !FileManager.default.fileExists(atPath: path) {
                _ = FileManager.default.createFile(atPath: path, contents: nil)  // a failure surfaces just below
            }
            let (hash, endsWithNewline) = try Self.tail(of: url)
            lastHash = hash
            handle = try FileHandle(forWritingTo: url)
            try handle.seekToEnd()
            if !endsWithNewline { try handle.write(contentsOf: Data("\n".utf8)) }
        } catch {
            // Foundation's file errors print as a dump; their POSIX reason is what helps.
            if let unusable = error as? LineageLogUnusable { throw unusable }
            let reason = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError).map { String(cString: strerror(Int32($0.code))) }
            throw LineageLogUnusable(path: path, reason: reason ?? (error as NSError).localizedDescription)
        }
    }

    /// Creates the log's directory and any missing parents, saying which
    /// one is in the way (a file) or what the system refused.
    private static func createDirectories(_ directory: String, for log: String) throws {
        guard !directory.isEmpty, fileType(directory) != S_IFDIR else { return }
        if fileType(directory) != nil {
            throw LineageLogUnusable(path: log, reason: "'\(directory)' is not a directory; give a path whose directories are directories")
        }
        try createDirectories((directory as NSString).deletingLastPathComponent, for: log)
        if mkdir(directory, 0o777) != 0 && errno != EEXIST {
            throw LineageLogUnusable(path: log, reason: "cannot create the directory '\(directory)': \(String(cString: strerror(errno)))")
        }
    }

    /// Why an existing `path` cannot hold a log: a directory, or a pipe or
    /// socket, whose opening would wait for a writer for ever. A file, or a
    /// device such as /dev/null, is fine; so is a path that does not exist yet.
    public static func unusable(_ path: String) -> String? {
        switch fileType(path) {
        case nil, S_IFREG, S_IFCHR: return nil
        case S_IFDIR: return "it is a directory; give the path of a file"
        default: return "it is not a file (a pipe, socket or block device); give the path of a file"
        }
    }

    /// The kind of file at `path` (`S_IFREG`, `S_IFDIR`, ...), links followed; nil when there is none.
    public static func fileType(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & S_IFMT : nil
    }

    /// The hash of the last complete event and whether the file ends a line.
    /// Read from the end in growing chunks: the log grows with every run and
    /// only its last event matters here.
    private static func tail(of url: URL) throws -> (hash: String, endsWithNewline: Bool) {
        let reader = try FileHandle(forReadingFrom: url)
        defer { try? reader.close() }
        let size = try reader.seekToEnd()
        guard size > 0 else { return ("", true) }
        var chunk: UInt64 = 1 << 16
        while true {
            let start = size > chunk ? size - chunk : 0
            try reader.seek(toOffset: start)
            var data = try reader.read(upToCount: Int(size - start)) ?? Data()
            let endsWithNewline = data.last == UInt8(ascii: "\n")
            // A chunk that starts mid-file may start mid-line: that line is not whole.
            if start > 0 { data = data.firstIndex(of: UInt8(ascii: "\n")).map { data[($0 + 1)...] } ?? Data() }
            let hash = lastCompleteHash(data)
            if !hash.isEmpty || start == 0 { return (hash, endsWithNewline) }
            chunk *= 4
        }
    }

    deinit { try? handle.close() }

    public static func sha256(_ line: some StringProtocol) -> String {
        Hex.string(SHA256.hash(data: Data(line.utf8)))
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

/// The lineage log cannot be opened for appending.
public struct LineageLogUnusable: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "cannot use \(path) as the lineage log: \(reason)" }
}
