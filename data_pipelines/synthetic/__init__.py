"""The synthetic audio-visual world (coloured shapes, tones, answerable queries), written in the real formats.

`world.make_clip` samples a clip, `render.render_clip` rasterises frames and masks, `audio.synth_audio` makes
its sound, `queries.make_queries` writes answerable queries, and `writer.write_refavs` / `writer.write_vos`
write whole datasets (plus `world.json`) that the readers in `data_pipelines.formats` read back.
"""
