// NiceGUI component file for app.palette.Palette: the block palette, drawn here from the `sections`
// prop (made once in Python). The search filters here, without a round trip; a section draws its
// items only while open; one tooltip, beside the palette, serves every item. A click on an item
// asks Python to add the block (`add`, its type); a drag carries the type to the canvas.
export default {
  template: `
    <div class="nc-palette">
      <q-input v-model="query" dense outlined clearable placeholder="Search blocks" class="w-full" />
      <q-scroll-area class="nc-palette-scroll">
        <q-expansion-item v-for="section in shown" :key="section.name" dense :label="section.label"
            :model-value="section.open" @update:model-value="(open) => (opened[section.name] = open)"
            class="w-full text-sm nc-palette-section" :data-section="section.name"
            :style="{ borderLeftColor: section.colour }">
          <template v-if="section.open">
            <div v-for="block in section.blocks" :key="block.type" class="nc-palette-item" draggable="true"
                 @click="$emit('add', block.type)" @dragstart="drag($event, block)"
                 @mouseenter="showTip($event, block)" @mouseleave="tip = null">{{ block.type }}</div>
          </template>
        </q-expansion-item>
      </q-scroll-area>
      <teleport to="body">
        <div v-if="tip" class="q-tooltip q-tooltip--style nc-palette-tip" :style="tip.style">{{ tip.text }}</div>
      </teleport>
    </div>
  `,
  props: { sections: Array, dragType: String },
  emits: ["add"],
  data() {
    return { query: "", opened: Object.fromEntries(this.sections.map((s) => [s.name, s.expanded])), tip: null };
  },
  watch: {
    query() {
      this.tip = null; // its item may be gone
    },
  },
  computed: {
    // While searching, every section with a match is open and shows its matches only.
    shown() {
      const words = (this.query || "").toLowerCase().split(/\s+/).filter(Boolean);
      return this.sections
        .map((section) => ({
          ...section,
          open: words.length > 0 || this.opened[section.name],
          blocks: section.blocks.filter((block) => words.every((word) => block.words.includes(word))),
        }))
        .filter((section) => section.blocks.length);
    },
  },
  methods: {
    drag(event, block) {
      this.tip = null;
      event.dataTransfer.setData(this.dragType, block.type);
    },
    // Beside the palette, level with the item: over the canvas, never over the palette itself.
    showTip(event, block) {
      const box = event.currentTarget.getBoundingClientRect();
      const style = { left: `${box.right + 8}px`, top: `${box.top + box.height / 2}px`, transform: "translateY(-50%)" };
      this.tip = { text: block.tip, style };
    },
  },
};
