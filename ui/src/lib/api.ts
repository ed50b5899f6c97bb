// The typed client of cairn's API, generated from the committed OpenAPI
// document (`npm run gen`), and the session it runs under: the sign-in
// cookie travels by itself; unsafe requests add the session's CSRF token.
import createClient, { type Middleware } from "openapi-fetch";
import { type components, type paths, runStatusValues } from "./schema";

export type Schemas = components["schemas"];
export type Run = Schemas["Run"];
export type RunSummary = Schemas["RunSummary"];
export type Step = Schemas["Step"];
export type Gate = Schemas["Gate"];
export type WaitingGate = Schemas["WaitingGate"];
export type CatalogEntry = Schemas["CatalogEntry"];
export type Plan = Schemas["Plan"];
export type PlanStep = Schemas["PlanStep"];
export type Checkpoint = Schemas["Checkpoint"];
export type Problem = Schemas["Problem"];
export type DefinitionProblem = Schemas["DefinitionProblem"];
export type Session = Schemas["Session"];
export type RunStatus = Schemas["RunStatus"];
export type SearchHit = Schemas["SearchHit"];
export type SnippetPiece = Schemas["SnippetPiece"];
export type HitKind = Schemas["HitKind"];

/** One stored event: `seq`, `at`, `actor`, `type` and its type's fields. */
export type CairnEvent = Schemas["Event"] & Record<string, unknown>;

let csrf: string | null = null;
const signedOutListeners = new Set<() => void>();

/** Keeps the CSRF token of the session signed in (or forgets it). */
export function setCsrfToken(token: string | null) {
  csrf = token;
}

/** Calls `listener` when the server says the session is gone (401). */
export function onSignedOut(listener: () => void): () => void {
  signedOutListeners.add(listener);
  return () => signedOutListeners.delete(listener);
}

const session: Middleware = {
  onRequest({ request }) {
    if (request.method !== "GET" && request.method !== "HEAD" && csrf) {
      request.headers.set("X-CSRF-Token", csrf);
    }
    return request;
  },
  onResponse({ request, response }) {
    if (response.status === 401 && !new URL(request.url).pathname.endsWith("/session")) {
      signedOutListeners.forEach((l) => l());
    }
    return response;
  },
};

/** The API, typed from `docs/openapi.json`. */
export const api = createClient<paths>({ baseUrl: location.origin, credentials: "same-origin" });
api.use(session);

/** A problem document's words for people, or a fallback. */
export function problemText(error: unknown, fallback = "the request failed"): string {
  if (error && typeof error === "object" && "detail" in error && typeof error.detail === "string") {
    return error.detail;
  }
  return fallback;
}

/** The run statuses, in the API's order (generated from its document). */
export const RUN_STATUSES: readonly RunStatus[] = runStatusValues;

/** Whether a status means a person is asked for something. */
export function waitsForPeople(status: string): boolean {
  return status.startsWith("waiting_") || status === "blocked";
}
