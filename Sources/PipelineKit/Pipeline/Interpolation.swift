import Foundation
/// `${NAME}` and `${NAME:-default}` substitution.
enum Interpolation {
    enum Piece: Equatable {
        case literal(String)
        case reference(name: String, fallback: String?)
    }

    /// Splits text into literals and references; nil when a `${` is never closed.
    static func pieces(_ text: String) -> [Piece]? {
        var pieces: [Piece] = []
        var rest = Substring(text)
        while let open = rest.range(of: "${") {
            if open.lowerBound > rest.startIndex { pieces.append(.literal(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else { return nil }
            let body = rest[open.upperBound..<close]
            if let dash = body.range(of: ":-") {
                pieces.append(.reference(name: String(body[..<dash.lowerBound]), fallback: String(body[dash.upperBound...])))
            } else {
                pieces.append(.reference(name: String(body), fallback: nil))
            }
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { pieces.append(.literal(String(rest))) }
        return pieces
    }

    /// Substitutes references with `lookup`; returns the names that could not be resolved.
    static func substitute(_ text: String, _ lookup: (String) -> String?) -> (String, unresolved: [String], malformed: Bool) {
        guard let pieces = pieces(text) else { return (text, [], true) }
        var output = ""
        var unresolved: [String] = []
        for piece in pieces {
            switch piece {
            case .literal(let literal): output += literal
            case let .reference(name, fallback):
                if let value = lookup(name), !(value.isEmpty && fallback != nil) {
                    output += value
                } else if let fallback {
                    output += fallback
                } else {
                    unresolved.append(name)
                }
            }
        }
        return (output, unresolved, false)
    }

    /// What the file itself says: each reference replaced by the default
    /// written with it, or by `placeholder` where it has none.
    static func asWritten(_ text: String, placeholder: String) -> String? {
        pieces(text)?.map { piece in
            switch piece {
            case .literal(let literal): return literal
            case .reference(_, let fallback): return fallback ?? placeholder
            }
        }.joined()
    }
}
