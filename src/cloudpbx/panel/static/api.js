// The REST side of the public API, with the key as a Bearer header (never in a URL).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  /** fetch() with the key; a network failure becomes ApiError(0, …). */
  async request(path, options = {}) {
    const headers = { Authorization: `Bearer ${this.key}`, ...(options.headers ?? {}) };
    try {
      return await fetch(path, { ...options, headers, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, String(error.message ?? error));
    }
  }

  /** JSON of a 2xx answer; otherwise ApiError with the server's own message. */
  async json(path) {
    const response = await this.request(path);
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    return response.json();
  }
}

/** The server's explanation: `error` of a JSON body, else the plain text. */
export async function errorText(response) {
  const body = await response.text();
  try {
    const parsed = JSON.parse(body);
    if (parsed && typeof parsed.error === "string") return parsed.error;
    if (parsed && typeof parsed.responseErrorMessage === "string") return parsed.responseErrorMessage;
  } catch {
    // not JSON: the documented plain-text answers ("Action Error", "Parameter is missing")
  }
  return body.trim() || response.statusText;
}
