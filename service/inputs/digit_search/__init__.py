"""The steps of the digit search (service.inputs.digit_finder), one module each, in the order it
takes them: paper, ink, near_paper, bold_strokes, mnist_frame; ruled_lines and shapes serve them."""
