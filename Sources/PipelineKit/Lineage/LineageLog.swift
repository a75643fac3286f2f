import Crypto
import Foundation

/// An append-only JSON-lines file of OpenLineage events in which every line
/// carries the SHA-256 of the line before it, so that editing, removing or
/// reordering lines is detectable (`LineageVerifier`).
///
/// Several runs may share a log (two pipelines started from one directory,
/// or a run that waited for another's lock). Each append therefore takes an
/// exclusive `flock` on the file, chains from the file's last line as it is
/// then, and writes in append mode: no run writes over another's lines.
public final class LineageLog: @unchecked Sendable {
    public static let chainFacet = "pipelinekit_chain"
    private let lock = NSLock()
    private let handle: FileHandle
    public let path: String
    private let url: URL
    /// The hash of the last line this log wrote, or found last when opened.
    public private(set) var lastHash: String
    /// The file's size when `lastHash` was its last line: while it stays so,
    /// no other run has appended, and the tail need not be read again.
    private var knownSize: off_t = -1

    /// Opens (creating when needed) the log for appending. A last line cut
    /// short by a crash is closed with a newline and skipped: the chain
    /// continues from the last complete line.
    public init(path: String) throws {
        self.path = path
        url = URL(fileURLWithPath: path)
        if let reason = Self.unusable(path) { throw LineageLogUnusable(path: path, reason: reason) }
        do {
            try Self.createDirectories(url.deletingLastPathComponent().path, for: path)
            let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw LineageLogUnusable(path: path, reason: String(cString: strerror(errno)))
            }
            handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            lastHash = ""
            try exclusively { lastHash = try closedTail() }
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

    /// Runs `body` holding the file's exclusive lock, which every log on this
    /// file takes to append, also in other processes.
    private func exclusively<T>(_ body: () throws -> T) throws -> T {
        while flock(handle.fileDescriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw LineageLogUnusable(path: path, reason: "cannot lock it: \(String(cString: strerror(errno)))") }
        }
        defer { flock(handle.fileDescriptor, LOCK_UN) }
        return try body()
    }

    /// The hash of the file's last complete event, after closing a line cut
    /// short by a crash with a newline; call holding the lock.
    private func closedTail() throws -> String {
        let now = size
        if now >= 0 && now == knownSize { return lastHash }
        let (hash, endsWithNewline) = try Self.tail(of: url)
        if !endsWithNewline { try handle.write(contentsOf: Data("\n".utf8)) }
        lastHash = hash
        knownSize = size
        return hash
    }

    /// The file's current size; -1 when it cannot be had.
    private var size: off_t {
        var info = stat()
        return fstat(handle.fileDescriptor, &info) == 0 ? info.st_size : -1
    }

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
            return try exclusively {
                // Another run may have appended since: chain from the file as it is now.
                facets[Self.chainFacet] = .object([
                    "_producer": .string(OpenLineage.producer),
                    "_schemaURL": .string(OpenLineage.facetSchema("ChainRunFacet")),
                    "previousLineSHA256": .string(try closedTail()),
                ])
                run["facets"] = .object(facets)
                object["run"] = .object(run)
                let line = try JSON.object(object).line()
                try handle.write(contentsOf: Data((line + "\n").utf8))
                lastHash = Self.sha256(line)
                knownSize = size
                return lastHash
            }
        }
    }
}

/// The lineage log cannot be opened for appending.
public struct LineageLogUnusable: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "cannot use \(path) as the lineage log: \(reason)" }
}
