// Builds src/ into ../app/static/bundle/index.js: one ES module (plus the elkjs layout worker in assets/,
// started on the first auto-layout) with vue left external, so that the canvas shares NiceGUI's own Vue.
import { defineConfig } from "vite";
import vue from "@vitejs/plugin-vue";

export default defineConfig({
  plugins: [vue()],
  // Assets (the layout worker) are found beside the bundle, wherever NiceGUI serves it.
  base: "./",
  define: { "process.env.NODE_ENV": JSON.stringify("production") },
  build: {
    outDir: "../app/static/bundle",
    emptyOutDir: true,
    minify: true,
    lib: { entry: "src/index.js", formats: ["es"], fileName: () => "index.js", cssFileName: "style" },
    // Lib mode keeps whitespace in ES output; the bundle is only served, so minify it fully.
    rollupOptions: { external: ["vue"], output: { minify: true } },
  },
});
