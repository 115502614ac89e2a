import Foundation

/// UTC dates and times as text (RFC 3339), by arithmetic. Foundation's
/// `ISO8601DateFormatter.string(from:timeZone:formatOptions:)` builds an ICU
/// formatter on every call (a quarter of an import's time went there), and a
/// format style is not much cheaper on the API's hot path; these give the same
/// text for every date from year 0 to 9999.
public enum UTCTime {
    /// `2026-11-29T10:00:00.280Z` (`milliseconds`) or `2026-11-29T10:00:00Z`.
    /// The time is rounded to the millisecond (a stored millisecond may sit a
    /// hair below its value as a Double), or cut to the second without them.
    public static func rfc3339(_ date: Date, milliseconds: Bool = true) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(24)
        if milliseconds {
            appendRFC3339(&bytes, millisecondsSince1970: Int64((date.timeIntervalSince1970 * 1000).rounded()))
        } else {
            appendRFC3339(&bytes, millisecondsSince1970: Int64((date.timeIntervalSince1970).rounded(.down)) * 1000, fraction: false)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The same text appended to `bytes` (an export writes one per row, with no String made).
    public static func appendRFC3339(_ bytes: inout [UInt8], millisecondsSince1970 totalMillis: Int64, fraction: Bool = true) {
        let (days, millisOfDay) = floorDivide(totalMillis, 86_400_000)
        let seconds = Int(millisOfDay / 1000), ms = Int(millisOfDay % 1000)
        appendDate(&bytes, days: days)
        bytes.append(UInt8(ascii: "T"))
        append(&bytes, seconds / 3600, width: 2)
        bytes.append(UInt8(ascii: ":"))
        append(&bytes, seconds / 60 % 60, width: 2)
        bytes.append(UInt8(ascii: ":"))
        append(&bytes, seconds % 60, width: 2)
        if fraction {
            bytes.append(UInt8(ascii: "."))
            append(&bytes, ms, width: 3)
        }
        bytes.append(UInt8(ascii: "Z"))
    }

    /// `2026-11-29`: the UTC day the time falls on.
    public static func day(_ date: Date) -> String {
        let (days, _) = floorDivide(Int64((date.timeIntervalSince1970).rounded(.down)), 86_400)
        var bytes = [UInt8]()
        bytes.reserveCapacity(10)
        appendDate(&bytes, days: days)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `2026-11-01` as midnight UTC; nil for anything else (a bad month or day included).
    public static func parseDay(_ text: String) -> Date? {
        var text = text
        return text.withUTF8 { b -> Date? in
            guard b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-") else { return nil }
            func number(_ r: Range<Int>) -> Int? {
                var n = 0
                for i in r {
                    guard (48...57).contains(b[i]) else { return nil }
                    n = n * 10 + Int(b[i] - 48)
                }
                return n
            }
            guard let y = number(0..<4), let m = number(5..<7), let d = number(8..<10), (1...12).contains(m), d >= 1 else { return nil }
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
            let lengths = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            guard d <= lengths[m - 1] else { return nil }
            return Date(timeIntervalSince1970: TimeInterval(days(y: y, m: m, d: d)) * 86_400)
        }
    }

    /// Days from 1970-01-01 to a civil date (H. Hinnant's days_from_civil).
    static func days(y: Int, m: Int, d: Int) -> Int64 {
        let yy = m <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return Int64(era * 146_097 + doe - 719_468)
    }

    /// The civil date of a day counted from 1970-01-01 (H. Hinnant's civil_from_days).
    static func civil(days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), Int(m), Int(d))
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        let q = a >= 0 ? a / b : (a - b + 1) / b
        return (q, a - q * b)
    }

    /// `2026-11-29` for a day counted from 1970-01-01.
    private static func appendDate(_ bytes: inout [UInt8], days: Int64) {
        let (y, m, d) = civil(days: days)
        append(&bytes, y, width: 4)
        bytes.append(UInt8(ascii: "-"))
        append(&bytes, m, width: 2)
        bytes.append(UInt8(ascii: "-"))
        append(&bytes, d, width: 2)
    }

    /// `value` in `width` digits, with leading zeros (no array made: an export writes one date per row).
    private static func append(_ bytes: inout [UInt8], _ value: Int, width: Int) {
        var divisor = 1
        for _ in 1..<max(1, width) { divisor *= 10 }
        var v = value
        while divisor > 0 {
            bytes.append(UInt8(48 + (v / divisor) % 10))
            v %= divisor
            divisor /= 10
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing white space (Unicode White_Space, line
    /// breaks included, as `.whitespacesAndNewlines`); the text itself,
    /// without copying through NSString, when there is none to remove.
    public var trimmingWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.first, let last = scalars.last else { return "" }
        // Visible ASCII at both ends, nearly always: nothing to trim, no Unicode property looked up.
        if (0x21...0x7E).contains(first.value) && (0x21...0x7E).contains(last.value) { return String(self) }
        if !first.properties.isWhitespace && !last.properties.isWhitespace { return String(self) }
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let end = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(self[start...end])
    }
}
