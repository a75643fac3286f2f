import Foundation
import Yams

/// Reads a pipeline file into a YAML tree, turning every way a file can be
/// unreadable into located diagnostics, and bounding what a hostile file can cost.
enum SourceFile {
    static let maxBytes = 1 << 20
    static let maxNodes = 100_000

    static func parse(_ data: Data, sink: DiagnosticSink) -> ConfigNode? {
        guard data.count <= maxBytes else {
            sink.error(line: 1, column: 1, "the file is \(data.count / 1024) KiB; pipeline files are limited to \(maxBytes / 1024) KiB")
            return nil
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            let (line, column) = firstInvalidUTF8(data)
            sink.error(line: line, column: column, "the file is not valid UTF-8 (byte at this position); save it as UTF-8")
            return nil
        }
        if text.contains("\0") {
            let (line, column) = position(of: text.firstIndex(of: "\0")!, in: text)
            sink.error(line: line, column: column, "the file contains a NUL character; is it a binary file?")
            return nil
        }
        if text.allSatisfy({ $0.isWhitespace }) || text.split(separator: "\n").allSatisfy({ $0.trimmingCharacters(in: .whitespaces).hasPrefix("#") || $0.allSatisfy(\.isWhitespace) }) {
            sink.error(line: 1, column: 1, "the file is empty; a pipeline needs at least 'pipeline:' and 'stages:'")
            return nil
        }
        let root: Node
        do {
            guard let node = try Parser(yaml: text).singleRoot() else {
                sink.error(line: 1, column: 1, "the file holds no YAML document")
                return nil
            }
            root = node
        } catch let error as YamlError {
            // libyaml's message for tab indentation is cryptic; say it plainly when that is the cause.
            if !reportTabs(text, sink: sink) { report(error, in: text, sink: sink) }
            return nil
        } catch {
            sink.error(line: 1, column: 1, "cannot parse YAML: \(error)")
            return nil
        }
        var budget = maxNodes
        guard withinBudget(root, &budget) else {
            let (line, column) = text.range(of: "*").map { position(of: $0.lowerBound, in: text) } ?? (1, 1)
            sink.error(line: line, column: column, "the document expands to more than \(maxNodes) values (nested aliases?); pipeline files must stay small")
            return nil
        }
        return ConfigNode(root, path: "")
    }

    private static func withinBudget(_ node: Node, _ budget: inout Int) -> Bool {
        budget -= 1
        if budget < 0 { return false }
        if let mapping = node.mapping {
            for pair in mapping where !withinBudget(pair.key, &budget) || !withinBudget(pair.value, &budget) { return false }
        } else if let sequence = node.sequence {
            for item in sequence where !withinBudget(item, &budget) { return false }
        }
        return true
    }

    /// Tabs in indentation are a YAML error whose libyaml message is cryptic; say it plainly.
    private static func reportTabs(_ text: String, sink: DiagnosticSink) -> Bool {
        var found = false
        for (number, line) in lines(of: text).enumerated() {
            let indent = line.prefix { $0 == " " || $0 == "\t" }
            if let tab = indent.firstIndex(of: "\t") {
                let column = line.distance(from: line.startIndex, to: tab) + 1
                sink.error(line: number + 1, column: column, "tab character in indentation; YAML indentation must use spaces")
                found = true
            }
        }
        return found
    }

    private static func report(_ error: YamlError, in text: String, sink: DiagnosticSink) {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            let prefix = context.map { "\($0.text) at \($0.mark.line):\($0.mark.column): " } ?? ""
            sink.error(line: mark.line, column: mark.column, "YAML syntax error: \(prefix)\(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            let names = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            // libyaml marks the mapping; the repeated key is what needs removing.
            if let key = duplicates.first.map({ "\($0)" }),
               let (first, second) = repeatedKey(key, inMappingAt: context.mark.line, in: text) {
                sink.error(line: second.line, column: second.column,
                           "duplicate key \(names) in a mapping (first at line \(first)); each key may appear once")
            } else {
                sink.error(line: context.mark.line, column: context.mark.column,
                           "duplicate key \(names) in a mapping; each key may appear once")
            }
        case let .reader(problem, offset, _, yaml):
            let (line, column) = offset.map { position(ofUTF8Offset: $0, in: yaml) } ?? (1, 1)
            sink.error(line: line, column: column, "cannot read YAML: \(problem)")
        default:
            sink.error(line: 1, column: 1, "cannot parse YAML: \(error)")
        }
    }

    /// In a block mapping starting at `line`, the line of `key`'s first
    /// occurrence and the position of its second, at the same indentation;
    /// nil for a flow mapping or a key written otherwise.
    static func repeatedKey(_ key: String, inMappingAt line: Int, in text: String) -> (first: Int, second: (line: Int, column: Int))? {
        let lines = lines(of: text)
        guard line >= 1, line <= lines.count else { return nil }
        var first: (line: Int, column: Int)?
        for number in line...lines.count {
            let content = lines[number - 1]
            // A sequence item's first key follows its "- ".
            var rest = content.drop { $0 == " " }
            while rest.hasPrefix("- ") { rest = rest.dropFirst(2).drop { $0 == " " } }
            let column = content.count - rest.count + 1
            let trimmed = rest.trimmingCharacters(in: .whitespaces)
            if let start = first, !trimmed.isEmpty, !trimmed.hasPrefix("#"), column < start.column { return nil }
            guard ["\(key):", "\"\(key)\":", "'\(key)':"].contains(where: { rest.hasPrefix($0) }) else { continue }
            guard let start = first else { first = (number, column); continue }
            if column == start.column { return (start.line, (number, column)) }
        }
        return nil
    }

    /// The file's lines as libyaml numbers them (CRLF is one break), empty ones included.
    private static func lines(of text: String) -> [Substring] {
        text.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false)
    }

    /// Line and column (in Unicode scalars, as libyaml counts) of an index; CRLF counts as one line break.
    static func position(of index: String.Index, in text: String) -> (Int, Int) {
        var line = 1, column = 1
        for scalar in text.unicodeScalars[..<index] {
            if scalar == "\n" { line += 1; column = 1 } else if scalar != "\r" { column += 1 }
        }
        return (line, column)
    }

    static func position(ofUTF8Offset offset: Int, in text: String) -> (Int, Int) {
        let index = text.utf8.index(text.utf8.startIndex, offsetBy: min(offset, text.utf8.count))
        return position(of: index, in: text)
    }

    private static func firstInvalidUTF8(_ data: Data) -> (Int, Int) {
        let bytes = [UInt8](data)
        var line = 1, column = 1, index = 0
        while index < bytes.count {
            let byte = bytes[index]
            let length: Int
            switch byte {
            case 0..<0x80: length = 1
            case 0xC2..<0xE0: length = 2
            case 0xE0..<0xF0: length = 3
            case 0xF0..<0xF5: length = 4
            default: return (line, column)
            }
            if index + length > bytes.count { return (line, column) }
            for next in bytes[(index + 1)..<(index + length)] where next & 0xC0 != 0x80 { return (line, column) }
            if String(validating: bytes[index..<(index + length)], as: UTF8.self) == nil { return (line, column) }
            if byte == 0x0A { line += 1; column = 1 } else { column += 1 }
            index += length
        }
        return (line, column)
    }
}
