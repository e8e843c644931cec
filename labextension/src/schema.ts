/**
 * `metadata.tactus` checked by the JSON Schema the kernel's pydantic models
 * produce (src/schema/metadata.schema.json, written by
 * `python -m tactus_kernel.protocol --schema`; a Python test fails when it
 * is stale). The extension has no schema of its own, so it cannot disagree
 * with the kernel about what a usable block is.
 *
 * The checker below reads only the keywords pydantic emits for these
 * models ($ref into $defs, type, const, required, properties,
 * additionalProperties, items, anyOf) and names the first bad field the way
 * the kernel does (`metadata.tactus.procedures.x.checkpoints.0.value`).
 */

import SCHEMA from './schema/metadata.schema.json';

type Schema = { [key: string]: unknown };

/** The protocol version the schema was generated with (`PROTOCOL` in protocol.py). */
export const PROTOCOL: string = (SCHEMA as Schema)['x-protocol'] as string;

/** A JSON object (not null, not an array). */
export function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value as a message shows it: its JSON, cut to 60 characters. */
export function describe(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? text.slice(0, 57) + '...' : text;
}

const TYPE_WORDS: { [type: string]: string } = {
  object: 'an object',
  array: 'a list',
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  null: 'null'
};

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case 'object':
      return isObject(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    case 'boolean':
      return typeof value === 'boolean';
    case 'null':
      return value === null;
    default:
      return true;
  }
}

function resolve(schema: Schema): Schema {
  const ref = schema.$ref;
  if (typeof ref === 'string' && ref.startsWith('#/$defs/')) {
    const defs = (SCHEMA as Schema).$defs as { [name: string]: Schema };
    return defs[ref.slice('#/$defs/'.length)];
  }
  return schema;
}

/** The first problem of `value` against `schema`, as "WHERE must ... (found ...)", or null. */
function check(value: unknown, raw: Schema, where: string): string | null {
  const schema = resolve(raw);
  if (Array.isArray(schema.anyOf)) {
    const problems = (schema.anyOf as Schema[]).map(s => check(value, s, where));
    if (problems.some(p => p === null)) {
      return null;
    }
    return problems.find(p => p !== null && !p.startsWith(`${where} must be`)) ?? problems[0];
  }
  if ('const' in schema && value !== schema.const) {
    return `${where} must be ${describe(schema.const)} (found ${describe(value)})`;
  }
  const type = schema.type;
  if (typeof type === 'string' && !hasType(value, type)) {
    return `${where} must be ${TYPE_WORDS[type] ?? type} (found ${describe(value)})`;
  }
  if (Array.isArray(value) && isObject(schema.items)) {
    for (let i = 0; i < value.length; i++) {
      const problem = check(value[i], schema.items, `${where}.${i}`);
      if (problem !== null) {
        return problem;
      }
    }
  }
  if (isObject(value)) {
    const properties = isObject(schema.properties) ? (schema.properties as { [key: string]: Schema }) : {};
    // the kernel (pydantic) reports fields in the order the model declares them
    for (const [name, sub] of Object.entries(properties)) {
      const present = Object.prototype.hasOwnProperty.call(value, name);
      if (!present) {
        if (Array.isArray(schema.required) && schema.required.includes(name)) {
          return `${where}.${name} is required`;
        }
        continue;
      }
      const problem = check(value[name], sub, `${where}.${name}`);
      if (problem !== null) {
        return problem;
      }
    }
    const extra = schema.additionalProperties;
    if (isObject(extra)) {
      for (const key of Object.keys(value)) {
        if (!Object.prototype.hasOwnProperty.call(properties, key)) {
          const problem = check(value[key], extra, `${where}.${key}`);
          if (problem !== null) {
            return problem;
          }
        }
      }
    }
  }
  return null;
}

/**
 * Why the kernel would refuse this `metadata.tactus` block, or null when it
 * is usable (an absent block is usable: it means "nothing recorded").
 */
export function schemaProblem(block: unknown): string | null {
  if (block === undefined || block === null) {
    return null;
  }
  return check(block, SCHEMA as Schema, 'metadata.tactus');
}

/** The major version of a protocol string ("1.1" -> 1); absent means 1.0; null when malformed. */
export function protocolMajor(version: unknown): number | null {
  if (version === undefined || version === null) {
    return 1;
  }
  const m = typeof version === 'string' ? /^(\d+)\.(\d+)$/.exec(version) : null;
  return m ? Number(m[1]) : null;
}
