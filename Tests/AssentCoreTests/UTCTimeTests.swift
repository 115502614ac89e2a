@testable import AssentCore
import Foundation
import Testing

/// The arithmetic formatter against Foundation's ICU one, which it replaces on hot paths.
@Suite struct UTCTimeTests {
    @Test func formatsAsFoundationDoesAcrossCenturiesLeapDaysAndMilliseconds() {
        let reference = ISO8601DateFormatter()
        reference.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var generator = SystemRandomNumberGenerator()
        var dates = [Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: -1), Date(timeIntervalSince1970: 951_782_400), // 2000-02-29
                     Date(timeIntervalSince1970: 4_107_542_399.999), Date(timeIntervalSince1970: 1_795_867_215.28)]
        for _ in 0..<5_000 {
            dates.append(Date(timeIntervalSince1970: Double(Int64.random(in: -2_208_988_800_000...253_402_300_799_000, using: &generator)) / 1000))
        }
        for date in dates {
            // A stored time is whole milliseconds; Foundation cuts a Double that sits a hair below one, so both see the rounded value.
            let millis = (date.timeIntervalSince1970 * 1000).rounded()
            let exact = Date(timeIntervalSince1970: millis / 1000 + 0.0001)
            #expect(UTCTime.rfc3339(date) == reference.string(from: exact), "\(date.timeIntervalSince1970)")
            let plain = ISO8601DateFormatter.string(from: date, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withInternetDateTime])
            #expect(UTCTime.rfc3339(date, milliseconds: false) == plain, "\(date.timeIntervalSince1970)")
            let day = ISO8601DateFormatter.string(from: date, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withFullDate])
            #expect(UTCTime.day(date) == day, "\(date.timeIntervalSince1970)")
        }
        #expect(UTCTime.rfc3339(Date(timeIntervalSince1970: 1_795_867_215.28)) == "2026-11-28T12:00:15.280Z", "a millisecond a hair below its value is not cut")
    }

    @Test func readsDaysAsAFormatterReadsThemAndRefusesTheRest() {
        let formatter = ISO8601DateFormatter()
        for text in ["1970-01-01", "2000-02-29", "2024-02-29", "2026-11-29", "2026-12-31", "2100-03-01", "1999-12-31", "1900-03-01"] {
            #expect(UTCTime.parseDay(text) == formatter.date(from: text + "T00:00:00Z"), "\(text)")
            #expect(UTCTime.parseDay(text).map(UTCTime.day) == text)
        }
        for text in ["2026-02-29", "2100-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "2026-11-31", "20261129xx", "2026-11-29T10:00:00Z", "", "２０２６-11-29"] {
            #expect(UTCTime.parseDay(text) == nil, "\(text)")
        }
    }

    @Test func trimsWhiteSpaceAsFoundationDoes() {
        for text in ["", " ", "a", " a ", "\t a b \r\n", "\u{00A0}x\u{3000}", "\u{2028}", "x\u{0085}", "é ", " 😀"] {
            #expect(text.trimmingWhitespace == text.trimmingCharacters(in: .whitespacesAndNewlines), "\(text.debugDescription)")
        }
    }
}

@Suite struct IdentifierTests {
    @Test func timeOrderedUUIDsAreVersion7CarryTheirMillisecondAndSortByTime() throws {
        let at = Date(timeIntervalSince1970: 1_796_245_049.151_5)
        let id = UUID.timeOrdered(at: at)
        let text = id.uuidString.lowercased()
        #expect(Array(text)[14] == "7", "version 7: \(text)")
        #expect("89ab".contains(Array(text)[19]), "variant 10: \(text)")
        // The first 48 bits are the Unix time in milliseconds (RFC 9562 5.7).
        let millis = text.replacingOccurrences(of: "-", with: "").prefix(12)
        #expect(UInt64(millis, radix: 16) == 1_796_245_049_151)
        // Later ids sort later as text (how SQLite and PostgreSQL order them), and none repeat.
        var previous = UUID.timeOrdered(at: at).lowercasedString
        var seen = Set<String>([previous])
        for step in 1...5_000 {
            let next = UUID.timeOrdered(at: at.addingTimeInterval(Double(step) * 0.000_3)).lowercasedString
            #expect(next > previous, "\(next) after \(previous)")
            seen.insert(next)
            previous = next
        }
        #expect(seen.count == 5_001)
        // Within one instant the random part still differs.
        #expect(Set((0..<1_000).map { _ in UUID.timeOrdered(at: at) }).count == 1_000)
        #expect(UUID(uuidString: text) == id)
    }

    @Test func randomUUIDsAreVersion4WithTheRFCVariantAndDoNotRepeat() {
        var seen = Set<UUID>()
        for _ in 0..<10_000 {
            let id = UUID.random()
            let text = id.uuidString.lowercased()
            #expect(Array(text)[14] == "4", "version 4: \(text)")
            #expect("89ab".contains(Array(text)[19]), "variant 10: \(text)")
            #expect(UUID(uuidString: text) == id)
            seen.insert(id)
        }
        #expect(seen.count == 10_000)
    }
}

@Suite struct UUIDBytesTests {
    @Test func lowercasedBytesAreTheLowercasedString() {
        for _ in 0..<1_000 {
            let id = UUID.random()
            #expect(String(decoding: id.lowercasedUTF8, as: UTF8.self) == id.uuidString.lowercased())
        }
    }
}

@Suite struct HexTests {
    @Test func hexIsFoundationsTwoDigitLowerCaseAndRoundTrips() {
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 2, 31, 32, 33, 100] {
            let data = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            #expect(data.hexString == data.map { String(format: "%02x", $0) }.joined())
            #expect(Data(hexString: data.hexString) == data)
        }
        #expect(Data([0x00, 0x0f, 0xf0, 0xff]).hexString == "000ff0ff")
    }
}

@Suite struct UUIDTextTests {
    @Test func parsesAsFoundationDoesAndWritesLowerCase() {
        for _ in 0..<2_000 {
            let id = UUID.random()
            #expect(UUID(text: id.uuidString) == id)
            #expect(UUID(text: id.uuidString.lowercased()) == id)
            #expect(id.lowercasedString == id.uuidString.lowercased())
        }
        let bad = ["", "not-a-uuid", "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-0000000000000",
                   "00000000x0000-0000-0000-000000000000", "0000000g-0000-0000-0000-000000000000",
                   "00000000-0000-0000-0000-00000000000é", "{00000000-0000-0000-0000-000000000000}"]
        for text in bad {
            #expect(UUID(text: text) == nil, "\(text)")
            #expect(UUID(uuidString: text) == nil, "Foundation agrees: \(text)")
        }
        #expect(UUID(text: "00000000-0000-0000-0000-000000000000") == UUID(uuidString: "00000000-0000-0000-0000-000000000000"))
        // Stricter than Foundation, whose sscanf lets a space stand for a leading digit.
        #expect(UUID(text: " 0000000-0000-0000-0000-000000000000") == nil)
    }
}
