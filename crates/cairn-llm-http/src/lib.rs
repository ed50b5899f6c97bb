//! The HTTP LLM provider: cairn's `LlmProvider` port over any
//! OpenAI-compatible chat-completions server.
//!
//! What it is: requests, streaming, structured output, and every HTTP fault
//! mapped to an error class the engine's retry policy understands.
//!
//! What it deliberately does not do: retry by policy (beyond reconnecting
//! before any byte arrived), or ever write an API key anywhere: keys are read
//! from the environment variable the config names and only sent as a header.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, reqwest, serde. Never on
//! the engine or the app.
