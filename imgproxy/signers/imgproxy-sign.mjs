// Signed imgproxy URLs from JavaScript (a Node dashboard backend): the README's "Signing spec",
// with nothing but node:crypto. Checked against imgproxy/signers/vectors.json by
// tests/signers/test_js_signer.py.
//
//   import { createSigner } from "./imgproxy-sign.mjs";
//   const signer = createSigner({ secret: process.env.IMGPROXY_SIGNING_KEY, kid: "k1",
//                                 baseUrl: "https://img.example.com" });
//   const url = signer.sign("photos", "employees/ada.jpg", { ttl: 3600, params: { w: 96 } });
//   const urls = signer.signMany([["photos", "a.jpg"], ["photos", "b.jpg", { w: 96 }]], { window: 3600 });
//   const meta = signer.sign("photos", "employees/ada.jpg", { route: "meta", params: { placeholder: 1 } });
//
// Parameter values are strings or safe integers (written in decimal). ttl and window are whole
// seconds; now (unix seconds, may be fractional) defaults to the clock, read once per signMany.

import { createHmac } from "node:crypto";

const RESERVED = new Set(["exp", "iat", "kid", "sig", "sub"]);
const MAX_SUB_CHARS = 128;
const MAX_KEY_BYTES = 1024;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const SUB_REFUSED = /[\u0000-\u001F\u007F-\u009F\u2028\u2029]/;
const CONTROL = /[\u0000-\u001F\u007F-\u009F]/;

function checkText(text, what) {
  if (typeof text !== "string") throw new TypeError(`${what} must be a string`);
  if (LONE_SURROGATE.test(text)) throw new RangeError(`${what} has a lone surrogate (not UTF-8)`);
  return text;
}

// Every UTF-8 byte outside A-Z a-z 0-9 - . _ ~ as %XX (uppercase): encodeURIComponent leaves
// ! ' ( ) * as they are, so those five are escaped after it. keepSlash: "/" stays (the key only).
export function percentEncode(text, keepSlash = false) {
  const encoded = encodeURIComponent(checkText(text, "text")).replace(
    /[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  return keepSlash ? encoded.replace(/%2F/g, "/") : encoded;
}

// Code point order, which is UTF-8 byte order (JavaScript's default sort compares UTF-16 units,
// which puts U+10000 and above before U+E000-U+FFFF).
export function compareCodePoints(a, b) {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const diff = left[i].codePointAt(0) - right[i].codePointAt(0);
    if (diff !== 0) return diff;
  }
  return left.length - right.length;
}

function checkKey(key) {
  checkText(key, "key");
  if (key === "") throw new RangeError("key is empty");
  if (Buffer.byteLength(key, "utf8") > MAX_KEY_BYTES) throw new RangeError(`key is over ${MAX_KEY_BYTES} bytes`);
  if (key.includes("\\")) throw new RangeError("key has a backslash");
  if (CONTROL.test(key)) throw new RangeError("key has a control character");
  if (key.split("/").some((s) => s === "." || s === "..")) throw new RangeError("key has a . or .. segment");
  return key;
}

function checkSub(sub) {
  checkText(sub, "sub");
  const chars = [...sub].length;
  if (chars < 1 || chars > MAX_SUB_CHARS || SUB_REFUSED.test(sub)) {
    throw new RangeError(`sub must be 1-${MAX_SUB_CHARS} characters without control characters`);
  }
  return sub;
}

function paramText(name, value) {
  if (typeof value === "string") return checkText(value, `parameter ${name}`);
  if (typeof value === "bigint") return value.toString(10);
  if (typeof value === "number" && Number.isSafeInteger(value)) return String(value);
  throw new TypeError(`parameter ${name}: strings and (safe) integers only`);
}

function wholeSeconds(value, what, min) {
  if (!Number.isSafeInteger(value) || value < min) throw new RangeError(`${what} must be whole seconds >= ${min}`);
  return value;
}

const ceilTo = (n, step) => (n % step === 0 ? n : n - (n % step) + step);
const floorTo = (n, step) => n - (n % step);

// (exp, iat) for a URL signed at now: auth/signing.py's stamps(), in exact integer arithmetic.
export function stamps(now, ttl, window = 0, durable = false) {
  if (typeof now !== "number" || !Number.isFinite(now) || now < 0) throw new RangeError("now must be unix seconds");
  wholeSeconds(window, "window", 0);
  if (durable) return { exp: null, iat: floorTo(Math.trunc(now), window > 0 ? window : 1) };
  wholeSeconds(ttl, "ttl", 1);
  let exp = Math.trunc(now + ttl);
  if (window === 0) return { exp, iat: exp - ttl };
  exp = ceilTo(exp, window);
  return { exp, iat: exp - ceilTo(ttl, window) - window };
}

// route: "img" (the image) or "meta" (its metadata, GET /meta/...): a signature opens one route.
const ROUTES = new Set(["img", "meta"]);

export function canonicalForm(source, key, params, route = "img") {
  if (!ROUTES.has(route)) throw new RangeError("route must be img or meta");
  const names = Object.keys(params).sort(compareCodePoints);
  const query = names.map((name) => `${percentEncode(name)}=${percentEncode(params[name])}`).join("&");
  return `/${route}/${percentEncode(source)}/${percentEncode(checkKey(key), true)}?${query}`;
}

export function signUrl({ secret, kid = null, baseUrl = "", source, key, params = {}, ttl = 3600,
                          window = 0, durable = false, sub = null, route = "img", now = Date.now() / 1000 }) {
  const signed = {};
  for (const [name, value] of Object.entries(params ?? {})) {
    checkText(name, "parameter name");
    if (name === "") throw new RangeError("a parameter name is empty");
    if (RESERVED.has(name)) throw new RangeError(`parameter name ${name} is reserved for signing`);
    signed[name] = paramText(name, value);
  }
  const { exp, iat } = stamps(now, ttl, window, durable);
  if (exp !== null) signed.exp = String(exp);
  signed.iat = String(iat);
  if (kid !== null && kid !== undefined) signed.kid = checkText(kid, "kid");
  if (sub !== null && sub !== undefined) signed.sub = checkSub(sub);
  const canonical = canonicalForm(checkText(source, "source"), key, signed, route);
  const secretBytes = typeof secret === "string" ? Buffer.from(checkText(secret, "secret"), "utf8") : secret;
  const sig = createHmac("sha256", secretBytes).update(canonical, "utf8").digest("base64url");
  return `${checkText(baseUrl, "baseUrl").replace(/\/+$/, "")}${canonical}&sig=${sig}`;
}

// One key's signer. signMany(items, opts): items are [source, key, params?] and share one now,
// so with a window every URL of a page is stable across reloads.
export function createSigner({ secret, kid = null, baseUrl = "" }) {
  return Object.freeze({
    kid,
    baseUrl,
    sign(source, key, opts = {}) {
      return signUrl({ ...opts, secret, kid, baseUrl, source, key });
    },
    signMany(items, opts = {}) {
      const now = opts.now ?? Date.now() / 1000;
      return items.map(([source, key, params]) => signUrl({ ...opts, params, now, secret, kid, baseUrl, source, key }));
    },
    toJSON() {
      return { kid, baseUrl, secret: "**********" };
    },
  });
}
