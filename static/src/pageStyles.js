// Two rules of the page's own stylesheets (NiceGUI's page template and Quasar) made Chromium
// re-style the whole canvas whenever an edge was added or removed: 5,353 elements, 40-90 ms,
// for one edge on a 300-node graph (7 elements, under 1 ms, without them). Vue Flow puts every
// edge in its own <svg>, a sibling of the nodes' container, so adding or removing an edge is a
// sibling change in the parent of all nodes and edges.
// - `#esm-fallback ~ *` (the "your browser does not support ES modules" notice) ends in a
//   universal `~`: trying it marks every parent on the page, for good, as having children that
//   sibling rules depend on; a child added to or removed from such a parent then re-styles
//   every element below it that any sibling- or position-dependent rule of the page could select
//   (every div, with Quasar's rules: 1,969 elements of the canvas). The notice is gone once
//   modules run (NiceGUI removes it; so does this module, which is one).
// - Quasar's `[dir=ltr] .q-field__marginal > * + *` (2px between a field's icons) is a universal
//   `+`: with it, "any element" is among those, and the whole subtree is re-styled. The same rule
//   as `> :where(:not(:first-child))` selects the same elements with the same specificity.
// Both are rewritten here, before a canvas is drawn; nothing else on the page changes.
const MARGINAL = ".q-field__marginal > * + *";

function rewrite(sheet) {
  let rules;
  try {
    rules = sheet.cssRules;
  } catch {
    return 0; // another origin's sheet, or not loaded yet
  }
  let changed = 0;
  for (let i = rules.length - 1; i >= 0; i--) {
    const rule = rules[i];
    if (rule.styleSheet) changed += rewrite(rule.styleSheet); // @import
    else if (rule.cssRules && !rule.selectorText) changed += rewrite(rule); // @layer, @media
    else if (rule.selectorText === "#esm-fallback ~ *") {
      sheet.deleteRule(i);
      changed += 1;
    } else if (rule.selectorText && rule.selectorText.includes(MARGINAL)) {
      const text = rule.cssText.replace(MARGINAL, ".q-field__marginal > :where(:not(:first-child))");
      sheet.deleteRule(i);
      sheet.insertRule(text, i);
      changed += 1;
    }
  }
  return changed;
}

export function relaxPageStyles() {
  document.getElementById("esm-fallback")?.remove();
  let changed = 0;
  for (const sheet of document.styleSheets) changed += rewrite(sheet);
  // A sheet still loading is seen once the page has loaded (rewritten rules no longer match).
  if (document.readyState !== "complete") window.addEventListener("load", relaxPageStyles, { once: true });
  return changed;
}
