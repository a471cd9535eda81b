import fc from "fast-check";

type JsonSchema = {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
  propertyNames?: JsonSchema;
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  minimum?: number;
  maximum?: number;
};

/**
 * fast-check arbitraries for values of a JSON schema (the zod schemas' OpenAPI form). Strings follow
 * their patterns and lengths, numbers their bounds; arrays and maps are kept short. Cross-field rules
 * are not modelled: callers filter with the zod schema, which is the point of the agreement test.
 */
export function arbitraryOf(schema: JsonSchema): fc.Arbitrary<unknown> {
  if (schema.enum) return fc.constantFrom(...schema.enum);
  switch (schema.type) {
    case "string":
      return stringOf(schema);
    case "integer":
      return fc.integer({
        min: Math.max(schema.minimum ?? -1e6, -1e9),
        max: Math.min(schema.maximum ?? 1e6, 1e9),
      });
    case "number":
      return fc.double({
        min: schema.minimum ?? -1e6,
        max: schema.maximum ?? 1e6,
        noNaN: true,
        noDefaultInfinity: true,
      });
    case "boolean":
      return fc.boolean();
    case "array":
      return fc.array(arbitraryOf(schema.items ?? {}), {
        minLength: schema.minItems ?? 0,
        maxLength: Math.min(schema.maxItems ?? 3, Math.max(schema.minItems ?? 0, 3)),
      });
    case "object": {
      if (schema.properties) {
        const required = new Set(schema.required ?? []);
        return fc.record(
          Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, arbitraryOf(v)])),
          { requiredKeys: [...required] },
        );
      }
      if (typeof schema.additionalProperties === "object") {
        return fc.dictionary(
          stringOf(schema.propertyNames ?? { type: "string", pattern: "^[a-z]{1,10}$" }),
          arbitraryOf(schema.additionalProperties),
          {
            maxKeys: 3,
          },
        );
      }
      return fc.constant({});
    }
    default:
      throw new Error(`no arbitrary for schema ${JSON.stringify(schema).slice(0, 200)}`);
  }
}

function stringOf(schema: JsonSchema): fc.Arbitrary<string> {
  const min = schema.minLength ?? 0;
  const max = schema.maxLength ?? 64;
  const base = schema.pattern
    ? fc.stringMatching(new RegExp(schema.pattern))
    : fc.string({ minLength: min, maxLength: Math.min(max, 32) });
  return base.filter((s) => s.length >= min && s.length <= max);
}
