import Foundation

/// Reads RFC 4180 CSV a chunk at a time (memory stays flat whatever the file
/// size): quoted fields with commas, doubled quotes and line breaks, CRLF or
/// LF line ends, a UTF-8 byte-order mark. Each record comes with the line it
/// starts on. (Written here: the mirror has CSV libraries, but none that
/// streams a file while reporting line numbers.)
public struct CSVReader {
    public struct Record {
        public var line: Int
        public var fields: [String]
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case unterminatedQuote(line: Int)
        case invalidUTF8(line: Int)
        case stray(line: Int)

        public var description: String {
            switch self {
            case .unterminatedQuote(let line): "line \(line): a quoted field is never closed"
            case .invalidUTF8(let line): "line \(line): the file is not UTF-8 text"
            case .stray(let line): "line \(line): a quote inside an unquoted field, or text after a closing quote (quote the field and double the quotes in it)"
            }
        }
    }

    private let next: () throws -> Data?
    private var buffer: [UInt8] = []
    private var index = 0
    private var finished = false
    private var line = 1
    private var first = true
    /// Bytes handed over so far (for progress).
    public private(set) var bytesRead = 0

    /// Reads from `next` until it returns nil or empty data.
    public init(chunks next: @escaping () throws -> Data?) {
        self.next = next
    }

    public init(fileHandle: FileHandle, chunkSize: Int = 1 << 16) {
        self.init { try fileHandle.read(upToCount: chunkSize) }
    }

    public init(text: String) {
        var done = false
        self.init {
            defer { done = true }
            return done ? nil : Data(text.utf8)
        }
    }

    private mutating func byte() throws -> UInt8? {
        if index >= buffer.count {
            guard !finished else { return nil }
            guard let data = try next(), !data.isEmpty else {
                finished = true
                return nil
            }
            buffer = [UInt8](data)
            index = 0
            bytesRead += data.count
        }
        defer { index += 1 }
        return buffer[index]
    }

    private mutating func peek() throws -> UInt8? {
        guard let b = try byte() else { return nil }
        index -= 1
        return b
    }

    /// The next record, or nil at the end. Empty lines are skipped.
    public mutating func nextRecord() throws -> Record? {
        var fields: [String] = []
        var field: [UInt8] = []
        var quoted = false, inQuotes = false, afterQuote = false, any = false
        var start = line
        func finish() throws {
            guard var text = String(validating: field, as: UTF8.self) else { throw Failure.invalidUTF8(line: start) }
            if first {
                // A byte-order mark before the first field (spreadsheets write one) is not part of it.
                first = false
                if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
            }
            fields.append(text)
            field.removeAll(keepingCapacity: true)
            quoted = false
            afterQuote = false
        }
        while let b = try byte() {
            any = true
            if inQuotes {
                if b == UInt8(ascii: "\"") {
                    if try peek() == UInt8(ascii: "\"") {
                        _ = try byte()
                        field.append(b)
                    } else {
                        inQuotes = false
                        afterQuote = true
                    }
                } else {
                    if b == UInt8(ascii: "\n") { line += 1 }
                    field.append(b)
                }
                continue
            }
            switch b {
            case UInt8(ascii: ","):
                try finish()
            case UInt8(ascii: "\r"):
                if try peek() == UInt8(ascii: "\n") { _ = try byte() }
                fallthrough
            case UInt8(ascii: "\n"):
                line += 1
                if fields.isEmpty && field.isEmpty && !quoted { // an empty line
                    any = false
                    start = line
                    continue
                }
                try finish()
                return Record(line: start, fields: fields)
            case UInt8(ascii: "\""):
                // A byte-order mark before a quoted first field is not part of it.
                if first && fields.isEmpty && field == [0xEF, 0xBB, 0xBF] { field.removeAll() }
                guard field.isEmpty && !quoted else { throw Failure.stray(line: start) }
                quoted = true
                inQuotes = true
            default:
                if afterQuote { throw Failure.stray(line: start) }
                field.append(b)
            }
        }
        if inQuotes { throw Failure.unterminatedQuote(line: start) }
        guard any else { return nil }
        try finish()
        return Record(line: start, fields: fields)
    }
}
