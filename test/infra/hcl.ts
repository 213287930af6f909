import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from '@cdktf/hcl2json';

/*
 * Enough of Terraform's expression language to evaluate this repository's infra/terraform with
 * given variables, so its test can check what the module would create (the args a container
 * gets, the labels a Service selects) rather than how the source is spelled. @cdktf/hcl2json turns
 * the files into JSON whose strings are templates (`"${var.name}-nats"`); this evaluates them.
 *
 * Covered: literals (strings with ${} templates, numbers, bools, null, lists, objects), references
 * (var., local., resource attributes, iterator.value), indexing and attributes, function calls
 * (merge, concat, tostring, range, yamlencode as the identity, length), the conditional operator,
 * == != < <= > >= + - * / && || !. Anything else throws: the test then says what it cannot read.
 */

export type Value = null | boolean | number | string | Value[] | { [k: string]: Value };

type Node =
  | { k: 'lit'; v: Value }
  | { k: 'tpl'; parts: (string | Node)[] }
  | { k: 'list'; items: Node[] }
  | { k: 'obj'; entries: [Node, Node][] }
  | { k: 'ref'; name: string }
  | { k: 'get'; of: Node; key: Node }
  | { k: 'call'; fn: string; args: Node[] }
  | { k: 'cond'; test: Node; then: Node; else: Node }
  | { k: 'bin'; op: string; l: Node; r: Node }
  | { k: 'not'; of: Node }
  | { k: 'neg'; of: Node };

class Parser {
  private i = 0;
  constructor(private readonly s: string) {}

  static expression(src: string): Node {
    const p = new Parser(src);
    const n = p.expr();
    p.ws();
    if (p.i !== src.length) throw new Error(`unexpected ${JSON.stringify(src.slice(p.i, p.i + 20))} in ${src}`);
    return n;
  }

  /** A whole template (the content of a JSON string from hcl2json). */
  static template(src: string): Node {
    const p = new Parser(src);
    return p.templateUntil(null);
  }

  private ws(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === ' ' || c === '\n' || c === '\t' || c === '\r') this.i++;
      else if (c === '#' || (c === '/' && this.s[this.i + 1] === '/')) while (this.i < this.s.length && this.s[this.i] !== '\n') this.i++;
      else break;
    }
  }

  private peek(t: string): boolean {
    this.ws();
    return this.s.startsWith(t, this.i);
  }

  private eat(t: string): void {
    if (!this.peek(t)) throw new Error(`expected ${t} at ${JSON.stringify(this.s.slice(this.i, this.i + 30))}`);
    this.i += t.length;
  }

  private expr(): Node {
    const test = this.binary(0);
    if (this.peek('?')) {
      this.eat('?');
      const then = this.expr();
      this.eat(':');
      return { k: 'cond', test, then, else: this.expr() };
    }
    return test;
  }

  private static readonly OPS: [string, number][] = [
    ['||', 1], ['&&', 2], ['==', 3], ['!=', 3], ['<=', 4], ['>=', 4], ['<', 4], ['>', 4], ['+', 5], ['-', 5], ['*', 6], ['/', 6],
  ];

  private binary(min: number): Node {
    let l = this.unary();
    for (;;) {
      this.ws();
      const op = Parser.OPS.find(([o, p]) => p > min && this.s.startsWith(o, this.i) && !(o === '-' && this.s[this.i + 1] === '>'));
      if (!op) return l;
      this.i += op[0].length;
      l = { k: 'bin', op: op[0], l, r: this.binary(op[1]) };
    }
  }

  private unary(): Node {
    if (this.peek('!')) {
      this.eat('!');
      return { k: 'not', of: this.unary() };
    }
    if (this.peek('-')) {
      this.eat('-');
      return { k: 'neg', of: this.unary() };
    }
    return this.postfix(this.primary());
  }

  private postfix(n: Node): Node {
    for (;;) {
      if (this.peek('[')) {
        this.eat('[');
        const key = this.expr();
        this.eat(']');
        n = { k: 'get', of: n, key };
      } else if (this.peek('.') && /[A-Za-z_]/.test(this.s[this.i + 1] ?? '')) {
        this.eat('.');
        n = { k: 'get', of: n, key: { k: 'lit', v: this.ident() } };
      } else if (this.peek('.') && /[0-9]/.test(this.s[this.i + 1] ?? '')) {
        this.eat('.');
        n = { k: 'get', of: n, key: { k: 'lit', v: Number(this.number()) } };
      } else {
        return n;
      }
    }
  }

  private ident(): string {
    this.ws();
    const m = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(this.s.slice(this.i));
    if (!m) throw new Error(`expected a name at ${JSON.stringify(this.s.slice(this.i, this.i + 30))}`);
    this.i += m[0].length;
    return m[0];
  }

  private number(): string {
    const m = /^[0-9]+(\.[0-9]+)?/.exec(this.s.slice(this.i))!;
    this.i += m[0].length;
    return m[0];
  }

  private primary(): Node {
    this.ws();
    const c = this.s[this.i];
    if (c === '(') {
      this.eat('(');
      const n = this.expr();
      this.eat(')');
      return n;
    }
    if (c === '"') {
      this.i++;
      return this.templateUntil('"');
    }
    if (c === '[') {
      this.eat('[');
      const items: Node[] = [];
      while (!this.peek(']')) {
        items.push(this.expr());
        if (this.peek(',')) this.eat(',');
      }
      this.eat(']');
      return { k: 'list', items };
    }
    if (c === '{') {
      this.eat('{');
      const entries: [Node, Node][] = [];
      while (!this.peek('}')) {
        const key: Node = this.peek('"') ? this.primary() : { k: 'lit', v: this.ident() };
        if (this.peek('=')) this.eat('=');
        else this.eat(':');
        entries.push([key, this.expr()]);
        if (this.peek(',')) this.eat(',');
      }
      this.eat('}');
      return { k: 'obj', entries };
    }
    if (c !== undefined && /[0-9]/.test(c)) return { k: 'lit', v: Number(this.number()) };
    const name = this.ident();
    if (name === 'true' || name === 'false') return { k: 'lit', v: name === 'true' };
    if (name === 'null') return { k: 'lit', v: null };
    if (this.peek('(')) {
      this.eat('(');
      const args: Node[] = [];
      while (!this.peek(')')) {
        args.push(this.expr());
        if (this.peek(',')) this.eat(',');
      }
      this.eat(')');
      return { k: 'call', fn: name, args };
    }
    return { k: 'ref', name };
  }

  /** Template text up to `end` (a closing quote, or the end of the input for null). */
  private templateUntil(end: string | null): Node {
    const parts: (string | Node)[] = [];
    let text = '';
    for (;;) {
      if (this.i >= this.s.length) {
        if (end !== null) throw new Error(`unterminated string in ${this.s}`);
        break;
      }
      const c = this.s[this.i]!;
      if (end !== null && c === end) {
        this.i++;
        break;
      }
      if (c === '\\' && end !== null) {
        const n = this.s[this.i + 1]!;
        text += n === 'n' ? '\n' : n === 't' ? '\t' : n;
        this.i += 2;
      } else if (c === '$' && this.s[this.i + 1] === '$' && this.s[this.i + 2] === '{') {
        text += '${';
        this.i += 3;
      } else if (c === '$' && this.s[this.i + 1] === '{') {
        if (text) parts.push(text);
        text = '';
        this.i += 2;
        parts.push(this.expr());
        this.eat('}');
      } else {
        text += c;
        this.i++;
      }
    }
    if (text || parts.length === 0) parts.push(text);
    return parts.length === 1 && typeof parts[0] === 'string' ? { k: 'lit', v: parts[0] } : { k: 'tpl', parts };
  }
}

/** The module's files merged as hcl2json reads them. */
export interface Module {
  json: Record<string, any>;
  resources: Record<string, Record<string, Record<string, any>>>;
}

export async function loadModule(dir: string): Promise<Module> {
  const json: Record<string, any> = {};
  for (const f of (await readdir(dir)).filter((f) => f.endsWith('.tf')).sort()) {
    const part = await parse(f, await readFile(join(dir, f), 'utf8'));
    for (const [section, body] of Object.entries(part)) {
      if (section === 'locals' || section === 'terraform') {
        json[section] = [...(json[section] ?? []), ...(body as unknown[])];
        continue;
      }
      json[section] ??= {};
      for (const [type, byName] of Object.entries(body as Record<string, unknown>)) {
        if (section === 'resource' || section === 'data') {
          json[section][type] ??= {};
          for (const [name, blocks] of Object.entries(byName as Record<string, unknown[]>)) {
            if (json[section][type][name]) throw new Error(`${section}.${type}.${name} is defined twice`);
            json[section][type][name] = (blocks as unknown[])[0];
          }
        } else {
          if (json[section][type]) throw new Error(`${section}.${type} is defined twice`);
          json[section][type] = (byName as unknown[])[0];
        }
      }
    }
  }
  return { json, resources: json.resource ?? {} };
}

/** Evaluates the module's values with `vars` (over the variables' defaults). */
export class Evaluator {
  private readonly locals: Record<string, unknown> = {};
  private readonly cache = new Map<string, Value>();

  constructor(
    private readonly m: Module,
    private readonly vars: Record<string, Value>,
  ) {
    for (const block of (m.json.locals ?? []) as Record<string, unknown>[]) Object.assign(this.locals, block);
  }

  variable(name: string): Value {
    if (name in this.vars) return this.vars[name]!;
    const v = this.m.json.variable?.[name] as Record<string, unknown> | undefined;
    if (!v) throw new Error(`no variable ${name}`);
    if (!('default' in v)) throw new Error(`variable ${name} has no default and was not given`);
    return this.value(v.default, {});
  }

  local(name: string): Value {
    const key = `local.${name}`;
    if (!this.cache.has(key)) {
      if (!(name in this.locals)) throw new Error(`no local ${name}`);
      this.cache.set(key, this.value(this.locals[name], {}));
    }
    return this.cache.get(key)!;
  }

  /** A JSON value as hcl2json wrote it: strings are templates, the rest literal (blocks as arrays). */
  value(raw: unknown, scope: Record<string, Value>): Value {
    if (typeof raw === 'string') return this.eval(Parser.template(raw), scope);
    if (Array.isArray(raw)) return raw.map((x) => this.value(x, scope));
    if (raw && typeof raw === 'object') {
      const out: Record<string, Value> = {};
      for (const [k, v] of Object.entries(raw)) {
        // Meta-arguments are not values (`ignore_changes = [spec[0].replicas]` names an attribute);
        // a container's `lifecycle { pre_stop ... }` is.
        if (k === 'depends_on' || (k === 'lifecycle' && JSON.stringify(v).match(/"(ignore_changes|create_before_destroy|prevent_destroy|replace_triggered_by)"/))) continue;
        if (k === 'dynamic') {
          for (const name of Object.keys(v as object)) out[name] = this.blocks(raw as Record<string, any>, name, scope);
          continue;
        }
        if (!(k in out)) out[k] = this.value(v, scope);
      }
      return out;
    }
    return raw as Value;
  }

  /** One expression in source form, e.g. `var.image` or `local.nats_url`. */
  expression(src: string, scope: Record<string, Value> = {}): Value {
    return this.eval(Parser.expression(src), scope);
  }

  /**
   * The repeated blocks `dynamic "<name>"` in `block` makes (plus its literal ones of that name),
   * each evaluated with the iterator bound.
   */
  blocks(block: Record<string, any>, name: string, scope: Record<string, Value> = {}): Record<string, Value>[] {
    const out = ((block[name] ?? []) as unknown[]).map((b) => this.value(b, scope) as Record<string, Value>);
    for (const d of (block.dynamic?.[name] ?? []) as Record<string, any>[]) {
      const items = this.value(d.for_each, scope) as Value[] | Record<string, Value>;
      const entries = Array.isArray(items) ? items.map((v, k) => [k, v] as const) : Object.entries(items);
      for (const [key, value] of entries) out.push(this.value(d.content[0], { ...scope, [d.iterator ?? name]: { key, value } }) as Record<string, Value>);
    }
    return out;
  }

  private ref(name: string, scope: Record<string, Value>, path: Node[]): { v: Value; used: number } {
    if (name in scope) return { v: scope[name]!, used: 0 };
    const key = (i: number): string => {
      const n = path[i];
      if (!n || n.k !== 'lit' || typeof n.v !== 'string') throw new Error(`cannot read ${name}: expected an attribute name`);
      return n.v;
    };
    if (name === 'var') return { v: this.variable(key(0)), used: 1 };
    if (name === 'local') return { v: this.local(key(0)), used: 1 };
    const type = this.m.resources[name];
    if (type) {
      // Walk the resource's raw JSON along the path and evaluate only what is reached: other parts
      // (dynamic blocks, lifecycle) do not evaluate on their own.
      let raw: unknown = type[key(0)];
      if (!raw) throw new Error(`no resource ${name}.${key(0)}`);
      let used = 1;
      while (used < path.length && raw !== null && typeof raw === 'object') {
        raw = (raw as Record<string, unknown>)[String(this.eval(path[used]!, scope))];
        used++;
      }
      return { v: raw === undefined ? null : this.value(raw, {}), used };
    }
    throw new Error(`cannot evaluate reference ${name}`);
  }

  private eval(n: Node, scope: Record<string, Value>): Value {
    switch (n.k) {
      case 'lit':
        return n.v;
      case 'tpl': {
        if (n.parts.length === 1 && typeof n.parts[0] !== 'string') return this.eval(n.parts[0]!, scope);
        return n.parts.map((p) => (typeof p === 'string' ? p : String(this.eval(p, scope)))).join('');
      }
      case 'list':
        return n.items.map((x) => this.eval(x, scope));
      case 'obj': {
        const o: Record<string, Value> = {};
        for (const [k, v] of n.entries) o[String(this.eval(k, scope))] = this.eval(v, scope);
        return o;
      }
      case 'ref':
        return this.ref(n.name, scope, []).v;
      case 'get': {
        // Flatten a.b[0].c so var./local./resource references take their names from the path.
        const path: Node[] = [];
        let base: Node = n;
        while (base.k === 'get') {
          path.unshift(base.key);
          base = base.of;
        }
        let { v, used } = base.k === 'ref' ? this.ref(base.name, scope, path) : { v: this.eval(base, scope), used: 0 };
        for (const k of path.slice(used)) {
          const key = this.eval(k, scope);
          if (v === null || typeof v !== 'object') throw new Error(`cannot index ${JSON.stringify(v)} with ${String(key)}`);
          v = (v as Record<string, Value>)[String(key)] ?? null;
        }
        return v;
      }
      case 'call': {
        const a = n.args.map((x) => this.eval(x, scope));
        switch (n.fn) {
          case 'merge':
            return Object.assign({}, ...a.map((x) => x ?? {}));
          case 'concat':
            return (a as Value[][]).flat(1);
          case 'tostring':
            return String(a[0]);
          case 'range': {
            const [from, to] = a.length === 1 ? [0, a[0] as number] : [a[0] as number, a[1] as number];
            return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
          }
          case 'yamlencode':
            return a[0]!;
          case 'length':
            return Array.isArray(a[0]) || typeof a[0] === 'string' ? a[0].length : Object.keys(a[0] ?? {}).length;
          default:
            throw new Error(`function ${n.fn} is not evaluated by test/infra/hcl.ts`);
        }
      }
      case 'cond':
        return this.eval(n.test, scope) ? this.eval(n.then, scope) : this.eval(n.else, scope);
      case 'not':
        return !this.eval(n.of, scope);
      case 'neg':
        return -(this.eval(n.of, scope) as number);
      case 'bin': {
        const l = this.eval(n.l, scope);
        if (n.op === '&&') return Boolean(l) && Boolean(this.eval(n.r, scope));
        if (n.op === '||') return Boolean(l) || Boolean(this.eval(n.r, scope));
        const r = this.eval(n.r, scope);
        switch (n.op) {
          case '==':
            return JSON.stringify(l) === JSON.stringify(r);
          case '!=':
            return JSON.stringify(l) !== JSON.stringify(r);
          case '<':
            return (l as number) < (r as number);
          case '<=':
            return (l as number) <= (r as number);
          case '>':
            return (l as number) > (r as number);
          case '>=':
            return (l as number) >= (r as number);
          case '+':
            return (l as number) + (r as number);
          case '-':
            return (l as number) - (r as number);
          case '*':
            return (l as number) * (r as number);
          case '/':
            return (l as number) / (r as number);
        }
        throw new Error(`operator ${n.op}`);
      }
    }
  }
}
