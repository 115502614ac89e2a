import Foundation

/// An email as Assent sends it: multipart/alternative (plain text + HTML),
/// UTF-8 throughout, with Message-ID and Date.
public struct MailMessage: Sendable, Equatable {
    public var from: MailAddress
    public var to: MailAddress
    public var subject: String
    public var text: String
    public var html: String
    public var messageID: String
    public var date: Date
    /// Extra headers (List-Unsubscribe, ...); names are checked to be tokens.
    public var headers: [(String, String)] = []
    /// Files attached after the text and HTML bodies.
    public var attachments: [Attachment] = []

    public struct Attachment: Sendable, Equatable {
        public var filename: String
        public var contentType: String
        public var data: Data

        public init(filename: String, contentType: String, data: Data) {
            self.filename = filename
            self.contentType = contentType
            self.data = data
        }
    }

    public init(from: MailAddress, to: MailAddress, subject: String, text: String, html: String, messageID: String, date: Date) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
        self.messageID = messageID
        self.date = date
    }

    public static func == (a: MailMessage, b: MailMessage) -> Bool {
        a.from == b.from && a.to == b.to && a.subject == b.subject && a.text == b.text && a.html == b.html
            && a.messageID == b.messageID && a.date == b.date && a.headers.elementsEqual(b.headers, by: { $0 == $1 })
            && a.attachments == b.attachments
    }

    /// The RFC 5322 / MIME bytes, CRLF line endings, 7-bit safe.
    public func rendered(boundary: String = "assent-" + UUID().uuidString.lowercased()) -> Data {
        var lines: [String] = [
            "From: \(from.header)",
            "To: \(to.header)",
            "Subject: \(MIME.encodedWord(subject))",
            "Date: \(MIME.date(date))",
            "Message-ID: <\(messageID)>",
            "MIME-Version: 1.0",
        ]
        for (name, value) in headers where MIME.isToken(name) {
            lines.append("\(name): \(value.replacingOccurrences(of: "\r", with: "").replacingOccurrences(of: "\n", with: " "))")
        }
        // With attachments: multipart/mixed around the multipart/alternative bodies.
        let mixed = boundary + "-mixed"
        if !attachments.isEmpty {
            lines += ["Content-Type: multipart/mixed; boundary=\"\(mixed)\"", "", "This is a multi-part message in MIME format.", "--\(mixed)"]
        }
        lines += [
            "Content-Type: multipart/alternative; boundary=\"\(boundary)\"",
            "",
            "This is a multi-part message in MIME format.",
            "--\(boundary)",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
        ]
        lines += MIME.base64Lines(text)
        lines += [
            "--\(boundary)",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
        ]
        lines += MIME.base64Lines(html)
        lines += ["--\(boundary)--"]
        if !attachments.isEmpty {
            for attachment in attachments {
                let name = attachment.filename.filter { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
                lines += ["", "--\(mixed)", "Content-Type: \(attachment.contentType); name=\"\(name)\"",
                          "Content-Disposition: attachment; filename=\"\(name)\"", "Content-Transfer-Encoding: base64", ""]
                let encoded = attachment.data.base64EncodedString()
                lines += stride(from: 0, to: encoded.count, by: 76).map { start in
                    let from = encoded.index(encoded.startIndex, offsetBy: start)
                    return String(encoded[from..<encoded.index(from, offsetBy: min(76, encoded.count - start))])
                }
            }
            lines += ["--\(mixed)--"]
        }
        lines += [""]
        return Data(lines.joined(separator: "\r\n").utf8)
    }
}

/// A mailbox: an address and an optional display name.
public struct MailAddress: Sendable, Equatable {
    public var address: String
    public var name: String?

    public init(_ address: String, name: String? = nil) {
        self.address = address
        self.name = name
    }

    /// Parses `Name <address>` or a bare address.
    public init(parsing text: String) {
        if let open = text.lastIndex(of: "<"), let close = text.lastIndex(of: ">"), open < close {
            let name = text[..<open].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            self.init(String(text[text.index(after: open)..<close]), name: name.isEmpty ? nil : name)
        } else {
            self.init(text.trimmingCharacters(in: .whitespaces))
        }
    }

    var header: String {
        guard let name, !name.isEmpty else { return address }
        return "\(MIME.encodedWord(name, quoteIfASCII: true)) <\(address)>"
    }
}

enum MIME {
    /// RFC 2047 encoded word for non-ASCII text; ASCII stays readable.
    static func encodedWord(_ text: String, quoteIfASCII: Bool = false) -> String {
        let clean = text.replacingOccurrences(of: "\r", with: "").replacingOccurrences(of: "\n", with: " ")
        if clean.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 }) {
            if quoteIfASCII && clean.contains(where: { ",;:<>@\"()[]\\".contains($0) }) {
                return "\"" + clean.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
            }
            return clean
        }
        // Split into chunks that keep each encoded word under 75 characters.
        var words: [String] = []
        var chunk = ""
        for character in clean {
            if (chunk + String(character)).utf8.count > 45 {
                words.append(chunk)
                chunk = ""
            }
            chunk.append(character)
        }
        if !chunk.isEmpty { words.append(chunk) }
        return words.map { "=?UTF-8?B?\(Data($0.utf8).base64EncodedString())?=" }.joined(separator: "\r\n ")
    }

    static func base64Lines(_ text: String) -> [String] {
        let normalized = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
        let encoded = Data(normalized.utf8).base64EncodedString()
        return stride(from: 0, to: encoded.count, by: 76).map { start in
            let from = encoded.index(encoded.startIndex, offsetBy: start)
            let to = encoded.index(from, offsetBy: min(76, encoded.count - start))
            return String(encoded[from..<to])
        }
    }

    static func date(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.weekday, .day, .month, .year, .hour, .minute, .second], from: date)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return String(format: "%@, %02d %@ %04d %02d:%02d:%02d +0000", days[(c.weekday ?? 1) - 1], c.day ?? 1, months[(c.month ?? 1) - 1],
                      c.year ?? 1970, c.hour ?? 0, c.minute ?? 0, c.second ?? 0)
    }

    static func isToken(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 0x20 && $0.value < 0x7F && $0 != ":" }
    }
}
