import AssentCore
import Foundation

/// How a form definition is stored: JSON with sorted keys, the same in every backend.
public enum FormJSON {
    public static func encode(_ definition: FormDefinition) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(definition), as: UTF8.self)
    }

    public static func decode(_ text: String) throws -> FormDefinition {
        try JSONDecoder().decode(FormDefinition.self, from: Data(text.utf8))
    }
}
