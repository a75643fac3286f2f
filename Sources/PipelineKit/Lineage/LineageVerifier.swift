import Foundation

/// Checks a lineage log's hash chain.
public struct LineageVerifier {
    public struct Result: Sendable {
        /// Problems, each naming its line; empty when the log is intact.
        public var problems: [String]
        /// Lines cut short by a crash that later runs chained past: not tampering.
        public var notes: [String]
        public var events: Int
        public var lastHash: String
        public var isIntact: Bool { problems.isEmpty }
    }

    /// Verifies `path`; with `knownLastHashes` (from the warehouse mirror),
    /// also detects a log whose last lines were cut off.
    public static func verify(path: String, knownLastHashes: [(run: String, hash: String)] = []) throws -> Result {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let text = String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let endsWithNewline = text.hasSuffix("\n") || text.isEmpty
        if endsWithNewline, lines.last == "" { lines.removeLast() }
        var problems: [String] = [], notes: [String] = []
        var previous = ""
        var events = 0
        var hashes: Set<String> = []
        let decoder = JSONDecoder()
        for (index, line) in lines.enumerated() {
            let number = index + 1
            guard let link = ChainLink.parse(line, decoder) else {
                if index == lines.count - 1 && !endsWithNewline {
                    problems.append("line \(number): incomplete last line (a write was interrupted); the next run will continue the chain past it")
                } else if index < lines.count - 1, let next = ChainLink.parse(lines[index + 1], decoder),
                          next.previousLineSHA256 == previous {
                    notes.append("line \(number): incomplete line left by an interrupted write; the chain continues past it")
                } else {
                    problems.append("line \(number): not a JSON event (edited or corrupted)")
                }
                continue
            }
            events += 1
            let recorded = link.previousLineSHA256
            if recorded == nil {
                problems.append("line \(number): no chain hash (not written by the runner, or edited)")
            } else if recorded != previous {
                problems.append(number == 1
                    ? "line 1: chain broken: it records previous hash \(recorded!.prefix(12))…, but it is the first line; lines before it were removed"
                    : "line \(number): chain broken: it records previous hash \(recorded!.prefix(12))…, but line \(number - 1) hashes to \(previous.prefix(12))…; line \(number - 1) was edited, or lines before line \(number) were removed or reordered")
            }
            previous = LineageLog.sha256(line)
            hashes.insert(previous)
        }
        for known in knownLastHashes where !hashes.contains(known.hash) {
            problems.append("run \(known.run): its last event (hash \(known.hash.prefix(12))…) is not in the log; lines were cut off or edited")
        }
        return Result(problems: problems, notes: notes, events: events, lastHash: previous)
    }
}

/// The one field of an event the chain check reads. Decoding only it is
/// about ten times faster than decoding the whole event as `JSON`.
private struct ChainLink: Decodable {
    struct Run: Decodable { let facets: Facets? }
    struct Facets: Decodable {
        let chain: Chain?
        init(from decoder: Decoder) throws {
            chain = try decoder.container(keyedBy: Key.self).decodeIfPresent(Chain.self, forKey: Key(stringValue: LineageLog.chainFacet))
        }
    }
    struct Key: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }
    struct Chain: Decodable { let previousLineSHA256: String? }

    let run: Run?
    var previousLineSHA256: String? { run?.facets?.chain?.previousLineSHA256 }

    /// nil when the line is not JSON; a JSON value of another shape has no link.
    static func parse(_ line: Substring, _ decoder: JSONDecoder) -> ChainLink? {
        if let link = try? decoder.decode(ChainLink.self, from: Data(line.utf8)) { return link }
        return JSON.parse(line) == nil ? nil : ChainLink(run: nil)
    }
}
