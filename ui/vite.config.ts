import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The built assets are committed and embedded in the `cairn` binary
// (crates/cairn-web): a fresh machine needs no Node.js to get the UI.
// `CAIRN_UI_OUT` builds elsewhere (`cargo xtask ui` compares that build
// with the committed one without touching it).
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: process.env.CAIRN_UI_OUT ?? "../crates/cairn-web/dist",
    emptyOutDir: true,
    // No inline scripts or modules: the CSP allows only 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: { "/api": "http://127.0.0.1:8080", "/metrics": "http://127.0.0.1:8080" },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});
