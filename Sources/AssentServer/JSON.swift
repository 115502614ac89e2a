import AssentCore
import Foundation
import Hummingbird

/// Timestamps on the wire: RFC 3339 / ISO 8601 in UTC with milliseconds.
enum WireDate {
    static let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    static let plain = Date.ISO8601FormatStyle()

    /// Rounded to the millisecond (a time stored in milliseconds may sit a hair below
    /// that value as a Double: …215.28 is …215.2799999), so the API shows what is stored.
    static func format(_ date: Date) -> String { UTCTime.rfc3339(date) }

    static func parse(_ text: String) -> Date? {
        (try? withFraction.parse(text)) ?? (try? plain.parse(text))
    }
}

enum JSONCoding {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(WireDate.format(date))
        }
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = WireDate.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text.prefix(40))' is not an RFC 3339 timestamp such as 2026-11-29T10:00:00Z")
            }
            return date
        }
        return decoder
    }()

    /// Whether JSON text holds `\u0000` as an escape (an odd run of backslashes before it), in either case.
    static func containsEscapedNUL(_ data: Data) -> Bool {
        let bytes = [UInt8](data)
        var i = 0
        while i + 5 < bytes.count {
            if bytes[i] == UInt8(ascii: "\\") {
                var run = 0
                while i < bytes.count && bytes[i] == UInt8(ascii: "\\") {
                    run += 1
                    i += 1
                }
                if run % 2 == 1, i + 4 < bytes.count, bytes[i] == UInt8(ascii: "u") || bytes[i] == UInt8(ascii: "U"),
                   bytes[(i + 1)...(i + 4)].allSatisfy({ $0 == UInt8(ascii: "0") }) {
                    return true
                }
                continue
            }
            i += 1
        }
        return false
    }

    /// The path (`evidence.note`) of the first string or key in a parsed JSON value that holds a NUL character.
    static func pathOfNUL(in value: Any, path: String = "") -> String? {
        switch value {
        case let text as String:
            return text.utf8.contains(0) ? (path.isEmpty ? "body" : path) : nil
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                let child = path.isEmpty ? key : path + "." + key
                if key.utf8.contains(0) { return path.isEmpty ? "body" : path }
                if let found = pathOfNUL(in: object[key]!, path: child) { return found }
            }
            return nil
        case let array as [Any]:
            for (i, element) in array.enumerated() {
                if let found = pathOfNUL(in: element, path: path + "[\(i)]") { return found }
            }
            return nil
        default:
            return nil
        }
    }

    /// A JSON path for error messages: `preferences[1].topic`.
    static func path(_ codingPath: [any CodingKey], last: (any CodingKey)? = nil) -> String {
        var out = ""
        for key in codingPath + (last.map { [$0] } ?? []) {
            if let index = key.intValue {
                out += "[\(index)]"
            } else {
                out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return out.isEmpty ? "body" : out
    }

    /// Turns a decoding failure into a 400 that names the field and what was expected.
    static func apiError(_ error: DecodingError) -> APIError {
        switch error {
        case .typeMismatch(let type, let context):
            return .badRequest(field: path(context.codingPath), "expected \(describe(type))")
        case .valueNotFound(let type, let context):
            return .badRequest(field: path(context.codingPath), "must not be null (expected \(describe(type)))")
        case .keyNotFound(let key, let context):
            return .badRequest(field: path(context.codingPath, last: key), "is required")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                return .badRequest(field: "body", "is not valid JSON (or holds a number too large for its field)")
            }
            return .badRequest(field: path(context.codingPath), context.debugDescription)
        @unknown default:
            return .badRequest(field: "body", "could not be read")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Bool.Type: "true or false"
        case is Date.Type: "an RFC 3339 timestamp"
        default:
            String(describing: type).contains("Array") ? "an array" : "an object"
        }
    }
}

/// A request body type that names the keys it accepts, so that a typo
/// (`evidnce`) is an error rather than silently ignored.
protocol StrictBody: Decodable {
    static var allowedKeys: Set<String> { get }
}

/// Decodes `T` after refusing keys it does not know.
struct Strict<T: StrictBody>: Decodable {
    var value: T

    init(from decoder: any Decoder) throws {
        if let container = try? decoder.container(keyedBy: AnyKey.self) {
            for key in container.allKeys where !T.allowedKeys.contains(key.stringValue) {
                throw DecodingError.dataCorrupted(.init(
                    codingPath: container.codingPath + [key],
                    debugDescription: "is not a known field (known: \(T.allowedKeys.sorted().joined(separator: ", ")))"))
            }
        }
        value = try T(from: decoder)
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

/// A field that distinguishes "absent" (leave as is) from `null` (clear).
enum Patch<Value: Decodable & Sendable>: Sendable {
    case absent
    case set(Value?)

    func apply(to value: inout Value?) {
        if case .set(let new) = self { value = new }
    }
}

extension KeyedDecodingContainer {
    func decodePatch<V: Decodable & Sendable>(_ type: V.Type, forKey key: Key) throws -> Patch<V> {
        guard contains(key) else { return .absent }
        if try decodeNil(forKey: key) { return .set(nil) }
        return .set(try decode(V.self, forKey: key))
    }
}

/// What every handler returns: a status and a JSON body, kept as bytes so that
/// an idempotent write can store and replay exactly what it sent.
struct APIResponse: Sendable {
    var status: HTTPResponse.Status
    var body: Data
    var contentType = "application/json"
    var headers: HTTPFields = [:]

    init(status: HTTPResponse.Status = .ok, json value: some Encodable) throws {
        self.status = status
        // A trailing newline keeps terminal output (curl) readable.
        self.body = try JSONCoding.encoder.encode(value) + Data("\n".utf8)
    }

    init(status: HTTPResponse.Status, body: Data, contentType: String) {
        self.status = status
        self.body = body
        self.contentType = contentType
    }

    /// A large body already in the buffer the server writes from, instead of `body` (saves a copy).
    var buffer: ByteBuffer?

    init(status: HTTPResponse.Status, buffer: ByteBuffer, contentType: String) {
        self.init(status: status, body: Data(), contentType: contentType)
        self.buffer = buffer
    }

    /// A body written as it is produced (large exports), instead of `body`.
    var stream: (@Sendable (inout any ResponseBodyWriter) async throws -> Void)?

    var response: Response {
        var headers = headers
        headers[.contentType] = contentType
        if let stream {
            return Response(status: status, headers: headers, body: ResponseBody { writer in
                try await stream(&writer)
                try await writer.finish(nil)
            })
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: buffer ?? ByteBuffer(bytes: body)))
    }
}

extension Request {
    /// Reads the body (up to the context's limit) and decodes it strictly.
    mutating func decodeJSON<T: StrictBody>(_ type: T.Type, context: some RequestContext) async throws -> T {
        let contentType = headers[.contentType]?.lowercased() ?? ""
        guard contentType.hasPrefix("application/json") || contentType.contains("+json") else {
            throw APIError(.unsupportedMediaType, detail: "send the body as JSON with 'Content-Type: application/json'")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await collectBody(upTo: context.maxUploadSize)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, detail: "request body is larger than \(context.maxUploadSize) bytes")
        }
        let data = Data(buffer: buffer)
        // Neither store keeps the NUL character in text (PostgreSQL refuses it), and no field needs it.
        if JSONCoding.containsEscapedNUL(data) {
            let field = (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])).flatMap { JSONCoding.pathOfNUL(in: $0) } ?? "body"
            throw APIError.invalid(field: field, "must not contain the NUL character (\\u0000)")
        }
        do {
            return try JSONCoding.decoder.decode(Strict<T>.self, from: data).value
        } catch let error as DecodingError {
            throw JSONCoding.apiError(error)
        }
    }
}

extension Data {
    init(buffer: ByteBuffer) {
        self = buffer.withUnsafeReadableBytes { Data($0) }
    }
}
